"""Batch queue client for ComfyUI: many images or frames through one or several servers.

Standard library only, so it runs anywhere (no torch, no ComfyUI needed)::

    python -m adaattn_batch workflows/api/adaattn_basic.json --content photos/ --style paintings/ \\
        --server http://gpu1:8188 --server http://gpu2:8188 -o out/

A manifest in the output folder makes a rerun resume where the last one stopped.
See ``python -m adaattn_batch --help``.
"""

from __future__ import annotations

__version__ = "0.1.0"
