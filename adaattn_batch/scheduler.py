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

from .attempt import AttemptRunner
from .errors import AllServersDown, Down, DownReason
from .jobs import FileHasher, Job, Plan
from .manifest import ErrorKind, JobRecord, JobState, Manifest, OutputRecord
from .options import Options
from .progress import Display, Summary, plural
from .records import (
    AttemptEnded,
    DepthSeen,
    Event,
    Outcome,
    OutcomeKind,
    Run,
    Sent,
    Server,
    ServerBack,
    ServerLost,
    discard,
)
from .resume import reconcile, remove_stale_temps
from .servers import Monitor, down_reasons, drop_prompts, probe_all, server_report, servers_status

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
        # Guards the tokens and ``closing``, which attempt threads read; taken before the manifest's own lock,
        # so that checking an attempt's token and recording its submission are one step.
        self.lock = threading.Lock()
        self.tokens: dict[str, int] = {}  # job id -> the token of its current attempt
        self._next_token = 0
        self.closing = False
        self.jobs = {job.id: job for job in plan.jobs}
        self.pending: deque[Job] = deque()
        self.adopt: dict[str, Sent] = {}  # prompts an earlier run sent, to collect first
        self.avoid: dict[str, set[str]] = {}  # job id -> servers where it failed
        self.summary = Summary(total=len(plan.jobs))
        self.probed = False
        self.attempts = AttemptRunner(plan, self.options, self.hasher, self.out_dir, self.client_id,
                                      lambda: self.closing, self._record_submit)  # fmt: skip

    # ------------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Reconcile the manifest with the plan: what is finished, what to collect, what to run."""
        with self.manifest.deferred():
            resumed = reconcile(self.plan, self.manifest, self.servers, self.out_dir, self.display)
        self.pending.extend(resumed.pending)
        self.adopt.update(resumed.sent)
        self.summary.skipped.extend(resumed.done)
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

    def _handle(self, event: Event) -> None:
        if isinstance(event, DepthSeen):
            if event.server.up:
                event.server.depth = event.depth
        elif isinstance(event, ServerLost):
            with self.lock:
                self._server_down(event.server, event.down)
        elif isinstance(event, ServerBack):
            self._server_up(event.server, event.depth)
        elif isinstance(event, AttemptEnded):
            self._result(event.run, event.outcome)
        else:
            raise TypeError(f"unknown event {event!r}")

    def _dispatch(self) -> None:
        if self.closing:
            return
        for job_id, sent in list(self.adopt.items()):  # prompts sent by an earlier run
            server = sent.server
            if server.up and len(server.running) < self.options.per_server:
                del self.adopt[job_id]
                self._start(self.jobs[job_id], server, adopt=sent.prompt_id)
            elif not server.up:  # run it elsewhere; the prompt there is dropped when it answers again
                del self.adopt[job_id]
                server.orphans.add(sent.prompt_id)
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
        self.inbox.put(AttemptEnded(run, self.attempts.outcome(run)))

    def _record_submit(self, run: Run, pid: str) -> bool:
        """Called by an attempt before it sends its prompt: False if the attempt is no longer wanted."""
        with self.lock:
            if self.closing or run.cancelled.is_set() or self.tokens.get(run.job.id) != run.token:
                return False
            self.manifest.apply(run.job.id, JobRecord.submit, run.server.url, pid)
            return True

    # ------------------------------------------------------------------ results

    def _result(self, run: Run, outcome: Outcome) -> None:
        job, server = run.job, run.server
        with self.lock:
            if self.tokens.get(job.id) != run.token:  # a stale attempt (its job moved on): forget it
                discard(outcome.files)
                return
            if outcome.kind is OutcomeKind.LOST:  # the server stopped answering: all its jobs move, this one included
                self._server_down(server, outcome.down or Down(DownReason.OTHER, outcome.message))
                return
            del self.tokens[job.id]
            server.running.pop(job.id, None)
            if outcome.kind is OutcomeKind.DONE:
                self._finish(run, outcome)
            elif outcome.kind is OutcomeKind.REJECTED:
                self._failed(run, ErrorKind.VALIDATION, outcome.message)
            elif outcome.kind is OutcomeKind.FAILED:
                attempts, allowed = self.manifest.jobs[job.id].attempts + 1, self.options.retries + 1
                if not (outcome.retry and attempts < allowed):
                    self._failed(run, ErrorKind.EXECUTION, outcome.message)
                    return
                self.manifest.apply(job.id, JobRecord.retry, ErrorKind.EXECUTION, outcome.message, server.url)
                self.avoid.setdefault(job.id, set()).add(server.url)
                self.pending.append(job)
                self.display.job_retry(job.id, server.label, outcome.message, attempts, allowed)
            elif outcome.kind is OutcomeKind.VANISHED:
                self._lost(run, outcome.message)
            else:  # CANCELLED while it was still the job's attempt: only when the run stops; run it again if not
                self.pending.appendleft(job)

    def _finish(self, run: Run, outcome: Outcome) -> None:
        records = []
        try:
            for f in outcome.files:
                final = self.out_dir / f.name
                final.parent.mkdir(parents=True, exist_ok=True)
                Path(f.tmp).replace(final)
                records.append(OutputRecord(f.name, f.size, f.sha256, f.source))
        except OSError as e:  # the output folder is full or gone: retrying on a server cannot help
            discard(outcome.files)
            self._failed(run, ErrorKind.LOCAL, f"cannot save {f.name}: {e.strerror or e}")
            return
        seconds = round(time.monotonic() - run.started, 3)
        self.manifest.apply(run.job.id, JobRecord.finish, run.server.url, records, seconds, outcome.exec_seconds)
        run.server.done += 1
        self.summary.done.append(run.job.id)
        self.summary.seconds.append(seconds)
        if outcome.exec_seconds is not None:
            self.summary.exec_seconds.append(outcome.exec_seconds)
        self.display.job_done(run.job.id, run.server.label, seconds, [r.file for r in records])

    def _failed(self, run: Run, kind: ErrorKind, message: str) -> None:
        self.manifest.apply(run.job.id, JobRecord.fail, kind, message, run.server.url)
        self.summary.failed[run.job.id] = message
        self.display.job_failed(run.job.id, run.server.label, message)

    def _lost(self, run: Run, message: str, announce: bool = True) -> None:
        """The job's server lost it: run it elsewhere, unless that keeps happening (a job that kills servers)."""
        job, server = run.job, run.server
        rec = self.manifest.jobs[job.id]
        if rec.prompt_id and rec.server == server.url:
            server.orphans.add(rec.prompt_id)  # dropped there when the server answers again
        rec = self.manifest.apply(job.id, JobRecord.lose, message, server.url, self.options.retries + 1)
        if rec.state is JobState.FAILED:
            self.summary.failed[job.id] = rec.errors[-1].message
            self.display.job_failed(job.id, server.label, rec.errors[-1].message)
            return
        self.pending.appendleft(job)
        if announce:
            self.display.job_moved(job.id, server.label, message)

    def _server_down(self, server: Server, down: Down) -> None:
        """Mark it down and move its jobs away (the caller holds ``self.lock``)."""
        if not server.up:
            return
        server.up = False
        server.gone.set()
        server.downs += 1
        server.down = down
        server.uploads.clear()  # it may come back with an empty input folder
        moved = list(server.running.values())
        server.running.clear()
        self.display.server_down(server.label, str(down), [run.job.id for run in moved])
        for run in moved:
            run.cancelled.set()
            self.tokens.pop(run.job.id, None)
            self._lost(run, f"{server.label} went down ({down})", False)

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
                if rec.state is JobState.SUBMITTED:
                    drop_prompts(run.server.client, {rec.prompt_id})
                    self.manifest.apply(run.job.id, JobRecord.withdraw)
        self.manifest.save()

    def _status_text(self) -> str:
        done = len(self.summary.done) + len(self.summary.skipped)
        return (f"{done}/{self.summary.total} done, {len(self.summary.failed)} failed, {len(self.pending)} waiting | "
                + servers_status(self.servers, self.manifest.jobs))  # fmt: skip
