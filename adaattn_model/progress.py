"""One hook for progress and cancellation through the engine.

Long work (the core, the frame path, the attention kernel between blocks of rows, the
convolutional stages between layers) calls :meth:`Progress.step` as it goes. The caller
decides what happens: a ComfyUI node passes its interrupt check and progress bar, the CLI
its tqdm bar. ``check`` may raise to stop the work (a cancel); nothing in the engine
catches that exception. ``None`` wherever a ``progress`` argument is accepted means
nobody listens, and costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable


class Progress:
    """Counts units of real work; reports ``(done, total)`` and checks for a cancel at each step."""

    __slots__ = ("_report", "_check", "done", "total")

    def __init__(
        self,
        report: Callable[[int, int], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self._report = report
        self._check = check
        self.done = 0
        self.total = 0

    def expect(self, units: int) -> None:
        """Announce ``units`` more units of work (the bar's total grows)."""
        self.total += int(units)

    def check(self) -> None:
        """Raise if the caller wants the work stopped (no progress is counted)."""
        if self._check is not None:
            self._check()

    def step(self, units: int = 1) -> None:
        """``units`` of work are done: check for a cancel, then report."""
        self.check()
        self.done += int(units)
        if self._report is not None:
            self._report(self.done, max(self.total, self.done))


def step(progress: Progress | None, units: int = 1) -> None:
    """:meth:`Progress.step` when someone listens, nothing otherwise."""
    if progress is not None:
        progress.step(units)


def expect(progress: Progress | None, units: int) -> None:
    """:meth:`Progress.expect` when someone listens, nothing otherwise."""
    if progress is not None:
        progress.expect(units)
