"""What the user sees: one line per finished job, a status line on a terminal, a summary."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Summary:
    total: int = 0
    done: list[str] = field(default_factory=list)  # finished in this run
    skipped: list[str] = field(default_factory=list)  # finished before
    failed: dict[str, str] = field(default_factory=dict)  # job -> last error
    left: int = 0  # not finished when the run stopped (interrupt, all servers down)
    seconds: list[float] = field(default_factory=list)  # per job done in this run: dispatch to saved outputs
    exec_seconds: list[float] = field(default_factory=list)  # the same jobs' execution on the server
    wall: float = 0.0
    servers: dict[str, str] = field(default_factory=dict)  # label -> 'N done', 'down (...)'
    stopped: str = ""  # why the run stopped early, if it did


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def seconds_text(s: float) -> str:
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(round(s), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class Display:
    """Prints progress. Thread-safe; the status line only goes to a terminal."""

    def __init__(self, quiet: bool = False, out: TextIO | None = None, err: TextIO | None = None,
                 status_line: bool | None = None):  # fmt: skip
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live = (not quiet) and (status_line if status_line is not None else self.err.isatty())
        self._lock = threading.Lock()
        self._shown = False
        self._last = 0.0
        self.total = 0
        self.finished = 0

    # ---- plain lines

    def line(self, text: str, important: bool = False) -> None:
        if self.quiet and not important:
            return
        with self._lock:
            self._clear()
            stream = self.err if important and self.quiet else self.out
            print(text, file=stream, flush=True)

    def _clear(self) -> None:
        if self._shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._shown = False

    def _count(self) -> str:
        width = len(str(self.total))
        return f"[{self.finished:>{width}}/{self.total}]"

    # ---- events

    def start(self, text: str, total: int, skipped: int) -> None:
        self.total, self.finished = total, skipped
        self.line(text)

    def job_done(self, job: str, server: str, seconds: float, files: list[str]) -> None:
        self.finished += 1
        shown = ", ".join(files[:3]) + (f" (+{len(files) - 3})" if len(files) > 3 else "")
        self.line(f"{self._count()} done    {job}  on {server}  {seconds_text(seconds)}  -> {shown}")

    def job_failed(self, job: str, server: str, message: str) -> None:
        self.finished += 1
        self.line(f"{self._count()} FAILED  {job}  on {server}: {message}", important=True)

    def job_retry(self, job: str, server: str, message: str, attempt: int, attempts: int) -> None:
        self.line(f"retry   {job} (attempt {attempt} of {attempts} failed on {server}): {message}")

    def job_moved(self, job: str, server: str, message: str) -> None:
        self.line(f"moved   {job}: {message}")

    def server_down(self, server: str, reason: str, moved: list[str]) -> None:
        extra = f"; its jobs go to the other servers: {', '.join(moved)}" if moved else ""
        self.line(f"server  {server} is down ({reason}){extra}", important=True)

    def server_up(self, server: str) -> None:
        self.line(f"server  {server} is back")

    def note(self, text: str) -> None:
        self.line(text)

    def status(self, text: str) -> None:
        """The status line (at most 4 times a second)."""
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last < 0.25:
            return
        self._last = now
        with self._lock:
            width = 119
            self.err.write("\r\x1b[K" + text[:width])
            self.err.flush()
            self._shown = True

    def summary(self, s: Summary, manifest: str) -> None:
        with self._lock:
            self._clear()
        parts = [f"{len(s.done)} done", f"{len(s.skipped)} skipped", f"{len(s.failed)} failed"]
        if s.left:
            parts.append(f"{s.left} not run")
        lines = [f"summary: {plural(s.total, 'job')}: {', '.join(parts)} in {seconds_text(s.wall)}"]
        if s.seconds:
            line = (
                f"time per job: median {seconds_text(statistics.median(s.seconds))}, "
                f"mean {seconds_text(statistics.fmean(s.seconds))} ({plural(len(s.seconds), 'job')}, upload to download)"
            )
            if s.exec_seconds:
                line += (f"; executing: median {seconds_text(statistics.median(s.exec_seconds))}, "
                         f"mean {seconds_text(statistics.fmean(s.exec_seconds))}")  # fmt: skip
            lines.append(line)
        if s.servers:
            lines.append("servers: " + "; ".join(f"{k} {v}" for k, v in s.servers.items()))
        groups: dict[str, list[str]] = {}  # the same error for many jobs is shown once
        for job, error in s.failed.items():
            groups.setdefault(error, []).append(job)
        for error, jobs in groups.items():
            shown = ", ".join(jobs[:3]) + (f" (+{len(jobs) - 3} more)" if len(jobs) > 3 else "")
            lines.append(f"failed: {shown}: {error}")
        if s.stopped:
            lines.append(f"stopped: {s.stopped}")
        lines.append(f"manifest: {manifest}")
        text = "\n".join(lines)
        print(text, file=self.out, flush=True)
