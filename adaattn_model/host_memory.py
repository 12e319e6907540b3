"""Giving freed host memory back to the system between the stages of a CPU run.

glibc's allocator keeps most freed blocks of a few MiB (VGG activations, attention blocks) in
its heap for reuse, so after the encoders a 512x512 run held 150-250 MiB it no longer used, and
the decoder's full-size maps came on top of that. ``malloc_trim`` hands those pages back; it
takes a few milliseconds. Elsewhere (other C libraries, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def return_freed_memory(device: torch.device) -> None:
    """Hand the host memory freed so far back to the system (CPU runs on glibc; otherwise a no-op)."""
    if device.type != "cpu":
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
