"""The servers' own threads and what is shown of them: probes, monitors, websocket listeners, reports.

Each server has a monitor thread (``GET /queue`` for its depth, probes while it is down) and a
websocket listener; both only report, through the scheduler's inbox or the server's tracker.
The main thread alone decides when a server counts as up or down.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .client import ComfyClient
from .errors import AllServersDown, Down, DownReason, ServerDown, ServerError
from .manifest import JobRecord
from .options import Options
from .progress import Display
from .records import DepthSeen, Server, ServerBack, ServerLost
from .websocket import HandshakeRefused, WebSocket, WebSocketError


def probe_all(servers: list[Server], display: Display) -> None:
    """Ask every server at once whether it answers; raises AllServersDown if none does."""

    def probe(s: Server) -> None:
        try:
            running, pending = s.client.queue()
            s.tracker.queue_seen(running, pending)
            s.depth, s.up = len(running) + len(pending), True
            s.gone.clear()
        except ServerDown as e:
            s.down = e.down
        except ServerError as e:
            s.down = Down(DownReason.OTHER, str(e))

    threads = [threading.Thread(target=probe, args=(s,), daemon=True) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in servers:
        if not s.up:
            display.line(f"server  {s.label} does not answer ({s.down})", important=True)
    if not any(s.up for s in servers):
        raise AllServersDown(f"no server answers: {down_reasons(servers)}")


def down_reasons(servers: list[Server]) -> str:
    return "; ".join(f"{s.label} ({s.down})" for s in servers)


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
                    self.inbox.put(DepthSeen(server, len(running) + len(pending)))
                except ServerDown as e:
                    self.inbox.put(ServerLost(server, e.down))
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
                    self.inbox.put(ServerBack(server, len(running) + len(pending)))
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


def servers_status(servers: list[Server], records: Mapping[str, JobRecord]) -> str:
    """The servers' part of the status line: jobs in flight on each, with their progress where known."""
    parts = []
    for s in servers:
        if not s.up:
            parts.append(f"{s.label}: down")
            continue
        prog = []
        for job_id in s.running:
            rec = records.get(job_id)
            value = s.tracker.progress.get(rec.prompt_id or "") if rec else None
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
            text += f", down ({s.down})"
        out[s.label] = text
    return out
