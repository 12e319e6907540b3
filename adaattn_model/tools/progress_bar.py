"""A tqdm bar on stderr driven by the engine's :class:`~adaattn_model.progress.Progress` steps.

The engine steps between layers, row bands and attention blocks, so the bar moves within one
large image and Ctrl-C (a KeyboardInterrupt, raised when the running step returns) stops a
command within about a step. The listener is given even with ``--quiet``: it is what splits
large layers into steps on a CPU, so Ctrl-C stays as quick with the bar hidden.
"""

from __future__ import annotations

import sys

from ..progress import Progress

SHOW_AFTER_S = 1.0  # quick runs print no bar


class EngineBar:
    """``progress`` to hand the engine; :meth:`close` when done."""

    def __init__(self, quiet: bool, unit: str = "step", desc: str | None = None) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=0, unit=unit, desc=desc, disable=quiet, delay=SHOW_AFTER_S, file=sys.stderr)
        self.progress = Progress(None if quiet else self._report)

    def _report(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.update(done - self._bar.n)  # tqdm throttles redraws itself

    def describe(self, text: str) -> None:
        self._bar.set_description_str(text, refresh=False)

    def close(self) -> None:
        self._bar.close()
