"""Plain records shared by the scheduler's threads: servers, attempts, their outcomes and events.

This module sits below ``attempt``, ``servers`` and ``scheduler`` (it imports none of them), so
they can all name these types without importing one another. A job's own state (pending,
submitted, done, failed) is not here: it lives in ``manifest``, where every change is saved.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .client import ComfyClient
from .errors import Down
from .jobs import Job
from .options import Options


class Tracker:
    """What the websocket and the /queue polls tell about our prompts on one server."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.finished: set[str] = set()
        self.started: dict[str, float] = {}
        self.progress: dict[str, tuple[int, int]] = {}
        self.snapshot: tuple[float, set[str]] = (0.0, set())  # (time, prompt ids queued or running)
        self.ws_since: float | None = None  # when the websocket's first message came (None: not connected)

    def feed(self, message: dict) -> None:
        kind, data = message.get("type"), message.get("data") or {}
        pid = data.get("prompt_id") if isinstance(data, dict) else None
        if not pid:
            return
        with self._cond:
            if kind in ("execution_start", "executing", "progress", "execution_cached"):
                self.started.setdefault(pid, time.monotonic())
            if kind == "progress":
                self.progress[pid] = (int(data.get("value", 0)), int(data.get("max", 0)))
            if kind in ("execution_success", "execution_error", "execution_interrupted") or (
                kind == "executing" and data.get("node") is None
            ):
                self.finished.add(pid)
                self._cond.notify_all()

    def queue_seen(self, running: list[str], pending: list[str], asked: float | None = None) -> None:
        """A /queue answer; ``asked``: when the request was sent (the answer is at least that recent)."""
        now = time.monotonic()
        with self._cond:
            for pid in running:
                self.started.setdefault(pid, now)
            self.snapshot = (asked if asked is not None else now, set(running) | set(pending))

    def ws_covers(self, since: float | None) -> bool:
        """True if the websocket has been listening since ``since``, so no event after it was missed."""
        ws = self.ws_since
        return since is not None and ws is not None and ws <= since

    def wait(self, pid: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pid in self.finished, timeout)

    def seen_finished(self, pid: str) -> None:
        with self._cond:
            self.finished.discard(pid)

    def forget(self, pid: str) -> None:
        with self._cond:
            self.finished.discard(pid)
            self.started.pop(pid, None)
            self.progress.pop(pid, None)


class Server:
    """One server as the scheduler sees it. ``up``, ``running`` and the counters change on the main thread only."""

    def __init__(self, index: int, url: str, options: Options):
        self.index = index
        self.client = ComfyClient(url, options.http_timeout, options.headers)
        self.url = self.client.url
        self.label = self.url.split("://", 1)[1]
        self.up = False
        self.gone = threading.Event()  # set while the scheduler counts this server as down
        self.gone.set()
        self.depth = 0
        self.running: dict[str, Run] = {}
        self.tracker = Tracker()
        self.uploads: dict[str, str] = {}  # sha256 (or folder key) -> value for the workflow
        self.upload_lock = threading.Lock()
        self.file_locks: dict[str, threading.Lock] = {}
        self.orphans: set[str] = set()  # prompt ids we gave up on here; removed when it answers again
        self.ws_thread: threading.Thread | None = None
        self.ws_supported = True
        self.next_ws = 0.0
        self.done = 0
        self.downs = 0
        self.down: Down | None = None  # why it is (or last was) down


@dataclass
class Run:
    """One attempt of one job on one server."""

    job: Job
    server: Server
    token: int  # the attempt is the job's current one while the scheduler holds this token for it
    adopt: str | None = None  # a prompt id from an earlier run to collect instead of submitting
    started: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Sent:
    """A prompt an earlier run sent, to collect from its server before anything is sent again."""

    server: Server
    prompt_id: str


class OutcomeKind(Enum):
    DONE = "done"  # outputs downloaded to temporary files
    FAILED = "failed"  # an execution error, a timeout, a bad answer or a local error
    REJECTED = "rejected"  # the server refused the prompt (validation): retrying cannot help
    LOST = "lost"  # the server stopped answering
    VANISHED = "vanished"  # the server answers but forgot the prompt (it restarted)
    CANCELLED = "cancelled"  # the scheduler gave the attempt up


@dataclass
class Download:
    """One output file downloaded to a temporary name, to be renamed into place if the attempt counts."""

    tmp: Path
    name: str  # relative to the output folder
    source: dict  # the server's {filename, subfolder, type}
    size: int = 0
    sha256: str = ""


@dataclass
class Outcome:
    kind: OutcomeKind
    message: str = ""
    retry: bool = True  # for FAILED: whether another attempt may help
    files: list[Download] = field(default_factory=list)
    exec_seconds: float | None = None  # from the history's timestamps: execution on the server
    down: Down | None = None  # for LOST: why the server is taken for down


def discard(files: list[Download]) -> None:
    """Delete temporary downloads (an attempt that failed midway, or a stale one)."""
    for f in files:
        Path(f.tmp).unlink(missing_ok=True)


# Events for the main thread's inbox, from the servers' monitors and the attempts' threads.


@dataclass(frozen=True)
class DepthSeen:
    server: Server
    depth: int  # prompts queued or running there, anyone's


@dataclass(frozen=True)
class ServerLost:
    server: Server
    down: Down


@dataclass(frozen=True)
class ServerBack:
    server: Server
    depth: int


@dataclass(frozen=True)
class AttemptEnded:
    run: Run
    outcome: Outcome


Event = DepthSeen | ServerLost | ServerBack | AttemptEnded
