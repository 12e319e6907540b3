"""The engine's progress hook, wired to ComfyUI's progress bar and Cancel button."""

from __future__ import annotations

from ..adaattn_model.progress import Progress
from . import host


def node_progress(total: int = 0) -> Progress:
    """A :class:`Progress` that moves the running node's bar and raises ComfyUI's interrupt on Cancel.

    ``total`` is what is known up front; the engine announces the rest as it goes.
    """
    bar = host.progress(max(1, int(total)))

    def report(done: int, total: int) -> None:
        bar.update_absolute(done, total)

    progress = Progress(report, host.check_interrupt)
    progress.expect(total)
    return progress
