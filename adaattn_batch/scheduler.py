"""Running a plan on one or several servers: dispatch, results, retries, failover, resume, shutdown.

Threads: the main thread owns the scheduling state (who runs what), reads one inbox and
prints; each server has a monitor and a websocket listener (``servers``); each job attempt
runs in its own thread (``attempt``: upload, submit, wait, download). Outputs are downloaded
to temporary files and renamed into place by the main thread only if the attempt is still
the job's current one, so a job moved away from a lost server can never be written twice.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import deque
from pathlib import Path

from .attempt import AttemptRunner, Outcome, Run, discard
from .errors import AllServersDown
from .jobs import FileHasher, Job, Plan
from .manifest import Manifest, _now
from .options import Options
from .progress import Display, Summary, plural
from .resume import reconcile, remove_stale_temps
from .servers import Monitor, Server, down_reasons, drop_prompts, probe_all, server_report, servers_status

__all__ = ["Options", "Scheduler"]  # Options is defined in .options; the CLI imports both from here


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
        self.attempts = AttemptRunner(plan, self.options, self.hasher, self.out_dir, self.client_id,
                                      lambda: self.closing, self._record_submit)  # fmt: skip

    # ------------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Reconcile the manifest with the plan: what is finished, what to collect, what to run."""
        with self.lock:
            pending, adopt, skipped = reconcile(self.plan, self.manifest, self.servers, self.out_dir, self.display)
            self.pending.extend(pending)
            self.adopt.update(adopt)
            self.summary.skipped.extend(skipped)
            self.manifest.save()
        remove_stale_temps(self.out_dir)

    # ------------------------------------------------------------------ main loop

    def run(self) -> Summary:
        t0 = time.monotonic()
        self.prepare()
        todo = len(self.pending) + len(self.adopt)
        self.display.start(f"adaattn-batch: {plural(len(self.plan.jobs), 'job')} ({self.plan.describe}) on "
                           f"{plural(len(self.servers), 'server')}; {len(self.summary.skipped)} already done, "
                           f"{todo} to run", len(self.plan.jobs), len(self.summary.skipped))  # fmt: skip
        try:
            if todo:
                self.probed = True
                probe_all(self.servers, self.display)
                monitor = Monitor(self.options, self.client_id, self.inbox, self.stopping, self.display)
                for s in self.servers:
                    monitor.start(s)
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
            self.summary.servers = server_report(self.servers) if self.probed else {}
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
                raise AllServersDown(f"all servers are down: {down_reasons(self.servers)}")
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

    def _attempt_thread(self, run: Run) -> None:
        self.inbox.put(("result", run, self.attempts.outcome(run)))

    def _record_submit(self, run: Run, pid: str) -> bool:
        """Called by an attempt before it sends its prompt: False if the attempt is no longer wanted."""
        with self.lock:
            if self.closing or run.cancelled.is_set() or self.tokens.get(run.job.id) != run.token:
                return False
            self.manifest.update(run.job.id, state="submitted", server=run.server.url, prompt_id=pid,
                                 submitted_at=_now())  # fmt: skip
            return True

    # ------------------------------------------------------------------ results

    def _result(self, run: Run, outcome: Outcome) -> None:
        job, server = run.job, run.server
        with self.lock:
            if self.tokens.get(job.id) != run.token:  # a stale attempt (its job moved on): forget it
                discard(outcome)
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
            discard(outcome)
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
            threading.Thread(target=drop_prompts, args=(server.client, orphans), daemon=True).start()

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
                    drop_prompts(run.server.client, {rec["prompt_id"]})
                    rec.update(state="pending")
        self.manifest.save()

    def _status_text(self) -> str:
        done = len(self.summary.done) + len(self.summary.skipped)
        return (f"{done}/{self.summary.total} done, {len(self.summary.failed)} failed, {len(self.pending)} waiting | "
                + servers_status(self.servers, self.manifest.jobs))  # fmt: skip
