"""Running a plan on one or several servers: dispatch, progress, retries, failover, resume.

Threads: the main thread owns the scheduling state (who runs what), reads one inbox and
prints; each server has a monitor (``GET /queue`` for its depth, probes while it is down)
and a websocket listener; each job attempt runs in its own thread (upload, submit, wait,
download). Outputs are downloaded to temporary files and renamed into place by the main
thread only if the attempt is still the job's current one, so a job moved away from a lost
server can never be written twice.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .client import ComfyClient, execution_error, output_files
from .errors import AllServersDown, PromptRejected, ServerDown, ServerError
from .jobs import UPLOAD_FOLDER, FileHasher, Job, OutputMismatch, Plan, safe_name
from .manifest import Manifest, _now, new_record
from .progress import Display, Summary, plural
from .websocket import HandshakeRefused, WebSocket, WebSocketError
from .workflow import apply

TEMP_PREFIX = ".adaattn-batch-"  # temporary download files in the output folder


@dataclass
class Options:
    retries: int = 2  # further attempts after an execution error or timeout
    per_server: int = 2  # jobs of ours queued on one server at a time
    job_timeout: float = 0.0  # seconds of execution before a job is interrupted (0: none)
    poll: float = 1.0  # seconds between /queue polls, and /history polls without a websocket
    probe_interval: float = 10.0  # seconds between probes of a server that is down
    server_grace: float = 30.0  # how long all servers may be down before the batch stops
    http_timeout: float = 30.0
    websocket: bool = True
    cancel_on_interrupt: bool = False  # on Ctrl-C, also remove our prompts from the servers
    headers: dict[str, str] = field(default_factory=dict)


class Cancelled(Exception):
    """This attempt was given up by the scheduler (its server went down, or the run stops)."""


class Vanished(Exception):
    """The prompt is neither queued nor in the history: the server lost it (restarted?)."""


class JobTimeout(Exception):
    pass


class ExecutionFailed(Exception):
    pass


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


@dataclass
class Run:
    """One attempt of one job on one server."""

    job: Job
    server: Server
    token: int
    adopt: str | None = None  # a prompt id from an earlier run to collect instead of submitting
    started: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Outcome:
    kind: str  # done | failed | rejected | lost | vanished | cancelled
    message: str = ""
    retry: bool = True
    files: list[dict] = field(default_factory=list)  # {tmp, name, size, sha256, source}
    exec_seconds: float | None = None  # from the history's timestamps: execution on the server


class Scheduler:
    def __init__(self, plan: Plan, servers: list[str], manifest: Manifest, out_dir: Path,
                 options: Options | None = None, display: Display | None = None):  # fmt: skip
        self.plan = plan
        self.options = options or Options()
        self.servers = [Server(i, url, self.options) for i, url in enumerate(servers)]
        labels = [s.label for s in self.servers]
        if len(set(labels)) != len(labels):
            for s in self.servers:
                s.label = s.url
            if len({s.url for s in self.servers}) != len(self.servers):
                raise ValueError("the same server is given twice")
        self.manifest = manifest
        self.out_dir = Path(out_dir)
        self.display = display or Display()
        self.hasher = FileHasher(manifest.hashes)
        self.client_id = uuid.uuid4().hex
        self.inbox: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.lock = manifest.lock  # one lock for manifest and tokens: submissions check both at once
        self.tokens: dict[str, int] = {}
        self._next_token = 0
        self.closing = False
        self.jobs = {job.id: job for job in plan.jobs}
        self.pending: deque[Job] = deque()
        self.adopt: dict[str, tuple[Server, str]] = {}  # job id -> (server, prompt id) to collect first
        self.avoid: dict[str, set[str]] = {}  # job id -> servers where it failed
        self.summary = Summary(total=len(plan.jobs))
        self.probed = False

    # ------------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Reconcile the manifest with the plan: what is finished, what to collect, what to run."""
        by_url = {s.url: s for s in self.servers}
        with self.lock:
            for job in self.plan.jobs:
                rec = self.manifest.jobs.get(job.id)
                if rec is None or rec.get("key") != job.key:
                    self.manifest.jobs[job.id] = new_record(job.key)
                    if rec is not None:
                        self.display.note(f"redo    {job.id}: its inputs changed")
                    self.pending.append(job)
                    continue
                state = rec.get("state")
                if state == "done":
                    missing = self._missing_outputs(rec)
                    if not missing:
                        self.summary.skipped.append(job.id)
                        continue
                    self.display.note(f"redo    {job.id}: output {missing} is missing or changed")
                    rec.update(state="pending", outputs=[])
                elif state == "submitted" and rec.get("prompt_id"):
                    server = by_url.get(rec.get("server"))
                    if server is not None:
                        self.adopt[job.id] = (server, rec["prompt_id"])
                        continue
                    rec.update(state="pending")
                elif state != "pending":  # failed before: a rerun tries again, with fresh attempts
                    rec.update(state="pending", attempts=0, losses=0)
                self.pending.append(job)
            self.manifest.save()
        self._remove_stale_temps()

    def _missing_outputs(self, rec: dict) -> str | None:
        if not rec.get("outputs"):
            return "(none recorded)"
        for out in rec["outputs"]:
            path = self.out_dir / out["file"]
            try:
                if path.stat().st_size != out["size"]:
                    return out["file"]
            except OSError:
                return out["file"]
        return None

    def _remove_stale_temps(self) -> None:
        """Partial downloads of a run that was killed (only our own temporary names)."""
        if self.out_dir.is_dir():
            for path in self.out_dir.rglob(f"{TEMP_PREFIX}*.part"):
                path.unlink(missing_ok=True)

    def _probe_all(self) -> None:
        self.probed = True

        def probe(s: Server) -> None:
            try:
                running, pending = s.client.queue()
                s.tracker.queue_seen(running, pending)
                s.depth, s.up = len(running) + len(pending), True
                s.gone.clear()
            except (ServerDown, ServerError) as e:
                s.down_reason = str(e).split(": ", 1)[-1]

        threads = [threading.Thread(target=probe, args=(s,), daemon=True) for s in self.servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in self.servers:
            if not s.up:
                self.display.line(f"server  {s.label} does not answer ({s.down_reason})", important=True)
        if not any(s.up for s in self.servers):
            raise AllServersDown(
                "no server answers: " + "; ".join(f"{s.label} ({s.down_reason})" for s in self.servers)
            )

    # ------------------------------------------------------------------ main loop

    def run(self) -> Summary:
        t0 = time.monotonic()
        self.prepare()
        todo = len(self.pending) + len(self.adopt)
        self.display.start(f"adaattn-batch: {plural(len(self.plan.jobs), 'job')} ({self.plan.describe}) on "
                           f"{plural(len(self.servers), 'server')}; {len(self.summary.skipped)} already done, {todo} to run",
                           len(self.plan.jobs), len(self.summary.skipped))  # fmt: skip
        try:
            if todo:
                self._probe_all()
                for s in self.servers:
                    threading.Thread(target=self._monitor, args=(s,), daemon=True, name=f"monitor {s.label}").start()
                self._loop()
        except KeyboardInterrupt:
            self.summary.stopped = "interrupted"
            self._shutdown(interrupted=True)
            raise
        except AllServersDown as e:
            self.summary.stopped = f"{e}; the manifest is saved, rerun to resume"
            self._shutdown()
        else:
            self._shutdown()
        finally:
            self.summary.wall = time.monotonic() - t0
            self.summary.left = len(self.pending) + len(self.adopt) + sum(len(s.running) for s in self.servers)
            self.summary.servers = self._server_report()
        return self.summary

    def _loop(self) -> None:
        all_down_since = None
        while self.pending or self.adopt or any(s.running for s in self.servers):
            self._dispatch()
            try:
                message = self.inbox.get(timeout=0.2)
            except queue.Empty:
                message = None
            while message is not None:
                self._handle(message)
                try:
                    message = self.inbox.get_nowait()
                except queue.Empty:
                    message = None
            if any(s.up for s in self.servers):
                all_down_since = None
            elif all_down_since is None:
                all_down_since = time.monotonic()
            elif time.monotonic() - all_down_since >= self.options.server_grace:
                raise AllServersDown("all servers are down: " + "; ".join(f"{s.label} ({s.down_reason})"
                                                                          for s in self.servers))  # fmt: skip
            self.display.status(self._status_text())

    def _handle(self, message: tuple) -> None:
        kind, server = message[0], message[1]
        if kind == "depth":
            if server.up:
                server.depth = message[2]
        elif kind == "down":
            self._server_down(server, message[2])
        elif kind == "up":
            self._server_up(server, message[2])
        elif kind == "result":
            self._result(message[1], message[2])

    def _dispatch(self) -> None:
        if self.closing:
            return
        for job_id, (server, pid) in list(self.adopt.items()):  # prompts sent by an earlier run
            if server.up and len(server.running) < self.options.per_server:
                del self.adopt[job_id]
                self._start(self.jobs[job_id], server, adopt=pid)
            elif not server.up:  # run it elsewhere; the prompt there is dropped when it answers again
                del self.adopt[job_id]
                server.orphans.add(pid)
                self.pending.appendleft(self.jobs[job_id])
        while self.pending:
            free = [s for s in self.servers if s.up and len(s.running) < self.options.per_server]
            if not free:
                return
            job = self.pending.popleft()
            avoid = self.avoid.get(job.id, set())
            preferred = [s for s in free if s.url not in avoid] or free
            server = min(preferred, key=lambda s: (s.depth, len(s.running), s.index))
            server.depth += 1  # until the next /queue poll says otherwise
            self._start(job, server)

    def _start(self, job: Job, server: Server, adopt: str | None = None) -> None:
        with self.lock:
            self._next_token += 1
            run = Run(job, server, self._next_token, adopt)
            self.tokens[job.id] = run.token
            server.running[job.id] = run
        threading.Thread(target=self._attempt_thread, args=(run,), daemon=True, name=f"job {job.id}").start()

    # ------------------------------------------------------------------ results

    def _result(self, run: Run, outcome: Outcome) -> None:
        job, server = run.job, run.server
        with self.lock:
            if self.tokens.get(job.id) != run.token:  # a stale attempt (its job moved on): forget it
                _discard(outcome)
                return
            if outcome.kind == "lost":  # the server stopped answering: all its jobs move, this one included
                self._server_down(server, outcome.message.split(": ", 1)[-1])
                return
            del self.tokens[job.id]
            server.running.pop(job.id, None)
            rec = self.manifest.jobs[job.id]
            if outcome.kind == "done":
                self._finish(run, outcome, rec)
            elif outcome.kind == "rejected":
                self.manifest.add_error(job.id, "validation", outcome.message, server.url, state="failed",
                                        attempts=rec["attempts"] + 1, finished_at=_now())  # fmt: skip
                self.summary.failed[job.id] = outcome.message
                self.display.job_failed(job.id, server.label, outcome.message)
            elif outcome.kind == "failed":
                attempts = rec["attempts"] + 1
                allowed = self.options.retries + 1
                if outcome.retry and attempts < allowed:
                    self.manifest.add_error(job.id, "execution", outcome.message, server.url, state="pending",
                                            attempts=attempts)  # fmt: skip
                    self.avoid.setdefault(job.id, set()).add(server.url)
                    self.pending.append(job)
                    self.display.job_retry(job.id, server.label, outcome.message, attempts, allowed)
                else:
                    self.manifest.add_error(job.id, "execution", outcome.message, server.url, state="failed",
                                            attempts=attempts, finished_at=_now())  # fmt: skip
                    self.summary.failed[job.id] = outcome.message
                    self.display.job_failed(job.id, server.label, outcome.message)
            elif outcome.kind == "vanished":
                self._lost(run, rec, outcome.message)

    def _finish(self, run: Run, outcome: Outcome, rec: dict) -> None:
        records = []
        try:
            for f in outcome.files:
                final = self.out_dir / f["name"]
                final.parent.mkdir(parents=True, exist_ok=True)
                Path(f["tmp"]).replace(final)
                records.append({"file": f["name"], "size": f["size"], "sha256": f["sha256"], "source": f["source"]})
        except OSError as e:  # the output folder is full or gone: retrying on a server cannot help
            _discard(outcome)
            message = f"cannot save {f['name']}: {e.strerror or e}"
            self.manifest.add_error(run.job.id, "local", message, run.server.url, state="failed",
                                    attempts=rec["attempts"] + 1, finished_at=_now())  # fmt: skip
            self.summary.failed[run.job.id] = message
            self.display.job_failed(run.job.id, run.server.label, message)
            return
        seconds = round(time.monotonic() - run.started, 3)
        self.manifest.update(run.job.id, state="done", outputs=records, finished_at=_now(), seconds=seconds,
                             exec_seconds=outcome.exec_seconds, server=run.server.url)  # fmt: skip
        run.server.done += 1
        self.summary.done.append(run.job.id)
        self.summary.seconds.append(seconds)
        if outcome.exec_seconds is not None:
            self.summary.exec_seconds.append(outcome.exec_seconds)
        self.display.job_done(run.job.id, run.server.label, seconds, [r["file"] for r in records])

    def _lost(self, run: Run, rec: dict, message: str, announce: bool = True) -> None:
        """The job's server lost it: run it elsewhere, unless that keeps happening (a job that kills servers)."""
        job, server = run.job, run.server
        if rec.get("prompt_id") and rec.get("server") == server.url:
            server.orphans.add(rec["prompt_id"])  # dropped there when the server answers again
        losses = rec.get("losses", 0) + 1
        if losses > self.options.retries + 1:
            message = f"{message} (lost {losses} times; it may be what brings the servers down)"
            self.manifest.add_error(job.id, "lost", message, server.url, state="failed", losses=losses,
                                    finished_at=_now())  # fmt: skip
            self.summary.failed[job.id] = message
            self.display.job_failed(job.id, server.label, message)
            return
        self.manifest.add_error(job.id, "lost", message, server.url, state="pending", losses=losses)
        self.pending.appendleft(job)
        if announce:
            self.display.job_moved(job.id, server.label, message)

    def _server_down(self, server: Server, reason: str) -> None:
        with self.lock:
            if not server.up:
                return
            server.up = False
            server.gone.set()
            server.downs += 1
            server.down_reason = reason
            server.uploads.clear()  # it may come back with an empty input folder
            moved = list(server.running.values())
            server.running.clear()
            self.display.server_down(server.label, reason, [run.job.id for run in moved])
            for run in moved:
                run.cancelled.set()
                self.tokens.pop(run.job.id, None)
                self._lost(run, self.manifest.jobs[run.job.id], f"{server.label} went down ({reason})", False)

    def _server_up(self, server: Server, depth: int) -> None:
        if server.up:
            return
        server.up, server.depth = True, depth
        server.gone.clear()
        orphans, server.orphans = set(server.orphans), set()
        self.display.server_up(server.label)
        if orphans:  # prompts we moved elsewhere: do not let them run twice
            threading.Thread(target=_drop_prompts, args=(server.client, orphans), daemon=True).start()

    # ------------------------------------------------------------------ an attempt (its own thread)

    def _attempt_thread(self, run: Run) -> None:
        try:
            outcome = self._attempt(run)
        except Cancelled:
            outcome = Outcome("cancelled")
        except ServerDown as e:
            outcome = Outcome("lost", str(e))
        except Vanished as e:
            outcome = Outcome("vanished", str(e))
        except PromptRejected as e:
            outcome = Outcome("rejected", str(e), retry=False)
        except OutputMismatch as e:
            outcome = Outcome("failed", str(e), retry=False)
        except (ServerError, ExecutionFailed, JobTimeout) as e:
            outcome = Outcome("failed", str(e))
        except OSError as e:
            outcome = Outcome("failed", f"local error: {e}", retry=False)
        except Exception as e:  # noqa: BLE001  (a bug must cost one job, not the batch)
            outcome = Outcome("failed", f"client error: {type(e).__name__}: {e}")
        self.inbox.put(("result", run, outcome))

    def _attempt(self, run: Run) -> Outcome:
        client = run.server.client
        entry, pid = None, run.adopt
        if pid is not None:
            entry = client.history(pid)
            if entry is None:
                running, pending = client.queue()
                if pid not in running and pid not in pending:
                    entry = client.history(pid)  # it may have finished between the two calls
                    if entry is None:
                        pid = None  # lost by the server: submit it again
        sent = None  # adopted prompts may have sent their events before we listened
        if pid is None:
            prompt = self._prepare_prompt(run)
            pid = str(uuid.uuid4())  # chosen here, recorded before it is sent: a crash cannot lose it
            if not self._record_submit(run, pid):
                raise Cancelled
            sent = time.monotonic()
            got = client.submit(prompt, self.client_id, pid)
            if got != pid:  # an older server mints its own ids
                pid = got
                if not self._record_submit(run, pid):
                    raise Cancelled
        if entry is None:
            entry = self._wait(run, pid, sent)
        return self._collect(run, pid, entry)

    def _record_submit(self, run: Run, pid: str) -> bool:
        with self.lock:
            if self.closing or run.cancelled.is_set() or self.tokens.get(run.job.id) != run.token:
                return False
            self.manifest.update(run.job.id, state="submitted", server=run.server.url, prompt_id=pid,
                                 submitted_at=_now())  # fmt: skip
            return True

    def _prepare_prompt(self, run: Run) -> dict:
        """Upload the job's inputs (and the --set @files) to its server; the workflow with them bound."""
        values = {}
        for name, target in self.plan.bindings.items():
            files = run.job.files[name]
            if name in run.job.folders:
                values[target] = self._upload_folder(run, files)
            else:
                values[target] = self._upload_file(run, files[0])
        for target, path in self.plan.file_sets.items():
            values[target] = self._upload_file(run, path)
        return apply(self.plan.workflow, values)

    def _upload_file(self, run: Run, path: Path) -> str:
        """Content-addressed name: two different files never share one, the same file is sent once per server."""
        server = run.server
        sha = self.hasher.sha256(path)
        with server.upload_lock:
            if sha in server.uploads:
                return server.uploads[sha]
            file_lock = server.file_locks.setdefault(sha, threading.Lock())
        with file_lock:  # another job may be sending this very file: wait for it rather than send it twice
            if sha not in server.uploads:
                self._check(run)
                name = f"{sha[:16]}-{safe_name(path.name)}"
                server.uploads[sha] = server.client.upload(path.read_bytes(), name, UPLOAD_FOLDER)
            return server.uploads[sha]

    def _upload_folder(self, run: Run, files: tuple[Path, ...]) -> str:
        """The job's frames into a folder of their own, numbered so the server sorts them as we do."""
        job, server = run.job, run.server
        folder = f"{UPLOAD_FOLDER}/{self.plan.batch_id}/{safe_name(job.id)}-{job.key[:8]}"
        if server.uploads.get(folder):  # a retry on the same server: the frames are there already
            return folder
        for k, path in enumerate(files):
            self._check(run)
            name = f"{k:06d}-{safe_name(path.name)}"
            stored = server.client.upload(path.read_bytes(), name, folder)
            if stored.rsplit("/", 1)[-1] != name:
                raise ServerError(f"{server.url}: uploaded {name} was stored as {stored}")
        server.uploads[folder] = folder
        return folder

    def _check(self, run: Run) -> None:
        if run.cancelled.is_set() or self.closing:
            raise Cancelled
        if run.server.gone.is_set():
            raise ServerDown(f"{run.server.url}: marked down")

    def _wait(self, run: Run, pid: str, sent: float | None) -> dict:
        """Until the prompt is in the server's history (the source of truth), which the websocket hastens."""
        server, client, opts = run.server, run.server.client, self.options
        submitted = time.monotonic()
        next_check = submitted + min(opts.poll, 0.5)
        hurry_until = 0.0  # after a websocket 'finished' event, look at the history often for a moment
        while True:
            self._check(run)
            now = time.monotonic()
            # With the websocket listening since before the prompt was sent, its events say when to look;
            # the history is then only a slow backstop. Otherwise poll the history.
            interval = opts.poll * (5 if server.tracker.ws_covers(sent) else 1)
            timeout = min(interval, next_check - now)
            if opts.job_timeout:  # wake up in time to enforce it (and to notice the start)
                started = server.tracker.started.get(pid)
                timeout = min(timeout, started + opts.job_timeout - now if started else opts.poll)
            if server.tracker.wait(pid, max(0.01, timeout)):
                server.tracker.seen_finished(pid)
                hurry_until = time.monotonic() + 2.0
                next_check = time.monotonic()
            now = time.monotonic()
            if now >= next_check:
                entry = client.history(pid)
                if entry is not None:
                    server.tracker.forget(pid)
                    return entry
                seen_at, ids = server.tracker.snapshot
                if seen_at > submitted and pid not in ids:
                    entry = client.history(pid)  # asked after that /queue answer: nothing slips between
                    if entry is not None:
                        server.tracker.forget(pid)
                        return entry
                    server.tracker.forget(pid)
                    raise Vanished(f"{server.label} lost prompt {pid} (neither queued nor finished; restarted?)")
                next_check = time.monotonic() + (0.1 if now < hurry_until else interval)
            started = server.tracker.started.get(pid)
            if opts.job_timeout and started and now - started > opts.job_timeout:
                try:
                    client.interrupt(pid)
                except (ServerDown, ServerError):
                    pass
                server.tracker.forget(pid)
                raise JobTimeout(f"timed out after {opts.job_timeout:g}s of execution (interrupted)")

    def _collect(self, run: Run, pid: str, entry: dict) -> Outcome:
        status = entry.get("status") or {}
        if status.get("status_str", "success") != "success" or status.get("completed") is False:
            raise ExecutionFailed(execution_error(entry))
        files = output_files(entry, set(self.plan.output_nodes) if self.plan.output_nodes else None)
        names = run.job.output_names([f["filename"] for f in files])
        got: list[dict] = []
        try:
            for f, name in zip(files, names):
                if name is None:
                    continue  # a warmup frame
                self._check(run)
                final = self.out_dir / name
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}.part"
                digest = hashlib.sha256()
                got.append({"tmp": str(tmp), "name": name, "size": 0, "sha256": "",
                            "source": {k: f.get(k, "") for k in ("filename", "subfolder", "type")}})  # fmt: skip
                with open(tmp, "wb") as fh:
                    got[-1]["size"] = run.server.client.view(f, fh, digest.update)
                    fh.flush()
                got[-1]["sha256"] = digest.hexdigest()
        except BaseException:
            _discard(Outcome("done", files=got))
            raise
        return Outcome("done", files=got, exec_seconds=execution_seconds(entry))

    # ------------------------------------------------------------------ servers (their own threads)

    def _monitor(self, server: Server) -> None:
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
                        server.ws_thread = threading.Thread(target=self._listen, args=(server,), daemon=True)
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

    def _listen(self, server: Server) -> None:
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

    # ------------------------------------------------------------------ ending

    def _shutdown(self, interrupted: bool = False) -> None:
        with self.lock:
            self.closing = True
            runs = [run for s in self.servers for run in s.running.values()]
            for run in runs:
                run.cancelled.set()
        self.stopping.set()
        if interrupted and self.options.cancel_on_interrupt:
            for run in runs:
                rec = self.manifest.jobs[run.job.id]
                if rec.get("state") == "submitted" and rec.get("prompt_id"):
                    _drop_prompts(run.server.client, {rec["prompt_id"]})
                    rec.update(state="pending")
        self.manifest.save()

    def _status_text(self) -> str:
        parts = []
        for s in self.servers:
            if not s.up:
                parts.append(f"{s.label}: down")
                continue
            prog = []
            for job_id in s.running:
                rec = self.manifest.jobs.get(job_id) or {}
                value = s.tracker.progress.get(rec.get("prompt_id") or "")
                prog.append(f"{value[0]}/{value[1]}" if value else "")
            shown = f" ({' '.join(p for p in prog if p)})" if any(prog) else ""
            parts.append(f"{s.label}: {len(s.running)} in flight{shown}")
        done = len(self.summary.done) + len(self.summary.skipped)
        return (f"{done}/{self.summary.total} done, {len(self.summary.failed)} failed, {len(self.pending)} waiting | "
                + " | ".join(parts))  # fmt: skip

    def _server_report(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if not self.probed:
            return out
        for s in self.servers:
            text = f"{s.done} done"
            if s.downs:
                text += f", went down {s.downs}x"
            if not s.up:
                text += f", down ({s.down_reason})"
            out[s.label] = text
        return out


def execution_seconds(entry: dict) -> float | None:
    """Seconds from execution_start to execution_success in a history entry (None if not recorded)."""
    stamps = {}
    for event, data in (entry.get("status") or {}).get("messages") or []:
        if isinstance(data, dict) and "timestamp" in data:
            stamps[event] = data["timestamp"]
    if "execution_start" in stamps and "execution_success" in stamps:
        return round(max(0, stamps["execution_success"] - stamps["execution_start"]) / 1000, 3)
    return None


def _discard(outcome: Outcome) -> None:
    for f in outcome.files:
        Path(f["tmp"]).unlink(missing_ok=True)


def _drop_prompts(client: ComfyClient, ids: set[str]) -> None:
    for pid in ids:
        try:
            client.interrupt(pid)
        except (ServerDown, ServerError):
            return
