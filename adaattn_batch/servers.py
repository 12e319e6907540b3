"""One server as the scheduler sees it: its state, what it says of our prompts, and its own threads.

Each server has a monitor thread (``GET /queue`` for its depth, probes while it is down) and a
websocket listener; both only report, through the scheduler's inbox or the server's tracker.
The main thread alone decides when a server counts as up or down.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .client import ComfyClient
from .errors import AllServersDown, ServerDown, ServerError
from .options import Options
from .progress import Display
from .websocket import HandshakeRefused, WebSocket, WebSocketError

if TYPE_CHECKING:
    from .attempt import Run


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
        self.down_reason = ""


def probe_all(servers: list[Server], display: Display) -> None:
    """Ask every server at once whether it answers; raises AllServersDown if none does."""

    def probe(s: Server) -> None:
        try:
            running, pending = s.client.queue()
            s.tracker.queue_seen(running, pending)
            s.depth, s.up = len(running) + len(pending), True
            s.gone.clear()
        except (ServerDown, ServerError) as e:
            s.down_reason = str(e).split(": ", 1)[-1]

    threads = [threading.Thread(target=probe, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in servers:
        if not s.up:
            display.line(f"server  {s.label} does not answer ({s.down_reason})", important=True)
    if not any(s.up for s in servers):
        raise AllServersDown(f"no server answers: {down_reasons(servers)}")


def down_reasons(servers: list[Server]) -> str:
    return "; ".join(f"{s.label} ({s.down_reason})" for s in servers)


@dataclass
class Monitor:
    """The servers' own threads: they report to the main thread's inbox and to each server's tracker."""

    options: Options
    client_id: str
    inbox: queue.Queue
    stopping: threading.Event
    display: Display

    def start(self, server: Server) -> None:
        threading.Thread(target=self.watch, args=(server,), daemon=True, name=f"monitor {server.label}").start()

    def watch(self, server: Server) -> None:
        opts = self.options
        while not self.stopping.is_set():
            if not server.gone.is_set():
                try:
                    asked = time.monotonic()
                    running, pending = server.client.queue()
                    server.tracker.queue_seen(running, pending, asked)
                    self.inbox.put(("depth", server, len(running) + len(pending)))
                except ServerDown as e:
                    self.inbox.put(("down", server, str(e).split(": ", 1)[-1]))
                except ServerError:
                    pass
                if opts.websocket and server.ws_supported and not server.gone.is_set():
                    alive = server.ws_thread is not None and server.ws_thread.is_alive()
                    if not alive and time.monotonic() >= server.next_ws:
                        server.next_ws = time.monotonic() + 5.0
                        server.ws_thread = threading.Thread(target=self.listen, args=(server,), daemon=True)
                        server.ws_thread.start()
                self.stopping.wait(opts.poll)
            else:
                if self.stopping.wait(opts.probe_interval):
                    return
                try:
                    running, pending = server.client.queue()
                    server.tracker.queue_seen(running, pending)
                    self.inbox.put(("up", server, len(running) + len(pending)))
                    while server.gone.is_set() and not self.stopping.wait(0.05):
                        pass  # until the main thread has taken it back
                except (ServerDown, ServerError):
                    pass

    def listen(self, server: Server) -> None:
        try:
            ws = WebSocket.connect(server.client.ws_url(self.client_id), self.options.http_timeout,
                                   server.client.headers)  # fmt: skip
        except HandshakeRefused as e:
            server.ws_supported = False
            self.display.note(f"note    {server.label}: {e}; following jobs through /history")
            return
        except OSError:
            return
        try:
            while not self.stopping.is_set() and not server.gone.is_set():
                text = ws.recv(timeout=0.5)
                if text is None:
                    continue
                if server.tracker.ws_since is None:  # ComfyUI registers the socket, then sends 'status'
                    server.tracker.ws_since = time.monotonic()
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    server.tracker.feed(message)
        except (WebSocketError, OSError):
            pass
        finally:
            server.tracker.ws_since = None
            ws.close()


def drop_prompts(client: ComfyClient, ids: set[str]) -> None:
    """Interrupt/remove prompts we gave up on, so they do not run twice (stops at the first failure)."""
    for pid in ids:
        try:
            client.interrupt(pid)
        except (ServerDown, ServerError):
            return


def servers_status(servers: list[Server], records: dict[str, dict]) -> str:
    """The servers' part of the status line: jobs in flight on each, with their progress where known."""
    parts = []
    for s in servers:
        if not s.up:
            parts.append(f"{s.label}: down")
            continue
        prog = []
        for job_id in s.running:
            rec = records.get(job_id) or {}
            value = s.tracker.progress.get(rec.get("prompt_id") or "")
            prog.append(f"{value[0]}/{value[1]}" if value else "")
        shown = f" ({' '.join(p for p in prog if p)})" if any(prog) else ""
        parts.append(f"{s.label}: {len(s.running)} in flight{shown}")
    return " | ".join(parts)


def server_report(servers: list[Server]) -> dict[str, str]:
    """For the summary: each server's jobs done, and how often it went down."""
    out: dict[str, str] = {}
    for s in servers:
        text = f"{s.done} done"
        if s.downs:
            text += f", went down {s.downs}x"
        if not s.up:
            text += f", down ({s.down_reason})"
        out[s.label] = text
    return out
