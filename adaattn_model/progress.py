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

    __slots__ = ("_check", "_report", "_reserved", "done", "total")

    def __init__(
        self,
        report: Callable[[int, int], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self._report = report
        self._check = check
        self.done = 0
        self.total = 0
        self._reserved = 0

    def expect(self, units: int) -> None:
        """Announce ``units`` more units of work (the bar's total grows, less what was reserved for them)."""
        units = int(units)
        taken = min(units, self._reserved)
        self._reserved -= taken
        self.total += units - taken

    def reserve(self, units: int) -> None:
        """Announce ``units`` of work ahead of the stages that will :meth:`expect` them (a loop that has
        timed one round forecasts the rest), so the total is right early; see :func:`forecast`."""
        units = max(0, int(units))
        self._reserved += units
        self.total += units

    def reserve_at_least(self, units: int) -> None:
        """:meth:`reserve` what is missing for ``units`` to be reserved (a forecast of work that an
        earlier, wider forecast may already cover)."""
        self.reserve(int(units) - self._reserved)

    @property
    def reserved(self) -> int:
        """Units reserved and not yet expected by a stage."""
        return self._reserved

    def release(self, units: int | None = None) -> None:
        """Count ``units`` (default: all) of what was reserved and never expected as done (a forecast
        that was too high), so the bar ends at its total; done and total never go down."""
        units = self._reserved if units is None else max(0, min(int(units), self._reserved))
        if units:
            self._reserved -= units
            self.done += units
            if self._report is not None:
                self._report(self.done, max(self.total, self.done))

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


def forecast(progress: Progress | None, units_done: int, items_done: int, items_left: int) -> None:
    """After ``items_done`` items took ``units_done`` units, have as much per item reserved for
    ``items_left`` more (rounded down: the stages announce any shortfall when they start)."""
    if progress is not None and items_done > 0 and items_left > 0:
        progress.reserve_at_least(units_done * items_left // items_done)


def release(progress: Progress | None) -> None:
    """:meth:`Progress.release` when someone listens, nothing otherwise."""
    if progress is not None:
        progress.release()


# How much work one step may hold on a CPU when someone listens: multiply-adds plus memory traffic
# (each element read or written weighted by ELEMENT_WORK). Above it, convolutions run in bands of
# rows and attention in blocks of fewer rows, so the bar moves and a cancel is seen within about a
# second even for a 2K image. Calibrated on a 2-core AVX-512 CPU (benchmarks/bench_progress.py):
# 3x3 convs run at about 42 G multiply-adds/s, and an element of a pool, an upsampling or a conv
# with few channels (conv1_1 either way) costs 100-200 multiply-adds; 2**34 units is then about
# 0.4 s alone on the machine. Each band or block computes exactly what the whole would, so results
# do not change. Without a listener nothing is split (splitting copies each band into the output,
# which costs some speed). GPUs run one step per layer or memory-sized block: they finish those in
# milliseconds.
CPU_STEP_WORK = 2**34
ELEMENT_WORK = 256


def step_work(device_type: str) -> int | None:
    """The most work one step may hold on a device of this type (None: no limit)."""
    return CPU_STEP_WORK if device_type == "cpu" else None
