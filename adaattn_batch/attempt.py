"""One attempt of one job on one server, in its own thread: upload, submit, wait, download.

Outputs are downloaded to temporary files next to their final place; the main thread renames
them only if the attempt is still the job's current one (see ``Scheduler._result``).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .client import execution_error, output_files
from .errors import Down, DownReason, PromptRejected, ServerDown, ServerError
from .jobs import UPLOAD_FOLDER, FileHasher, OutputMismatch, Plan, safe_name
from .options import Options
from .records import Download, Outcome, OutcomeKind, Run, discard
from .workflow import apply

TEMP_PREFIX = ".adaattn-batch-"  # temporary download files in the output folder


class Cancelled(Exception):
    """This attempt was given up by the scheduler (its server went down, or the run stops)."""


class Vanished(Exception):
    """The prompt is neither queued nor in the history: the server lost it (restarted?)."""


class JobTimeout(Exception):
    pass


class ExecutionFailed(Exception):
    pass


@dataclass
class AttemptRunner:
    """Carries out attempts; what it needs of the scheduler's state comes in as two callables."""

    plan: Plan
    options: Options
    hasher: FileHasher
    out_dir: Path
    client_id: str
    closing: Callable[[], bool]  # whether the run is stopping
    record_submit: Callable[[Run, str], bool]  # records a prompt id before it is sent; False: no longer wanted

    def outcome(self, run: Run) -> Outcome:
        """The attempt carried out, whatever happens, as an Outcome for the main thread."""
        try:
            return self._attempt(run)
        except Cancelled:
            return Outcome(OutcomeKind.CANCELLED)
        except ServerDown as e:
            return Outcome(OutcomeKind.LOST, str(e), down=e.down)
        except Vanished as e:
            return Outcome(OutcomeKind.VANISHED, str(e))
        except PromptRejected as e:
            return Outcome(OutcomeKind.REJECTED, str(e), retry=False)
        except OutputMismatch as e:
            return Outcome(OutcomeKind.FAILED, str(e), retry=False)
        except (ServerError, ExecutionFailed, JobTimeout) as e:
            return Outcome(OutcomeKind.FAILED, str(e))
        except OSError as e:
            return Outcome(OutcomeKind.FAILED, f"local error: {e}", retry=False)
        except Exception as e:  # noqa: BLE001  (a bug must cost one job, not the batch)
            return Outcome(OutcomeKind.FAILED, f"client error: {type(e).__name__}: {e}")

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
            if not self.record_submit(run, pid):
                raise Cancelled
            sent = time.monotonic()
            got = client.submit(prompt, self.client_id, pid)
            if got != pid:  # an older server mints its own ids
                pid = got
                if not self.record_submit(run, pid):
                    raise Cancelled
        if entry is None:
            entry = self._wait(run, pid, sent)
        return self._collect(run, pid, entry)

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
        if run.cancelled.is_set() or self.closing():
            raise Cancelled
        if run.server.gone.is_set():
            raise ServerDown(run.server.url, Down(DownReason.MARKED))

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
        got: list[Download] = []
        try:
            for f, name in zip(files, names):
                if name is None:
                    continue  # a warmup frame
                self._check(run)
                final = self.out_dir / name
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}.part"
                digest = hashlib.sha256()
                got.append(Download(tmp, name, {k: f.get(k, "") for k in ("filename", "subfolder", "type")}))
                with open(tmp, "wb") as fh:
                    got[-1].size = run.server.client.view(f, fh, digest.update)
                    fh.flush()
                got[-1].sha256 = digest.hexdigest()
        except BaseException:
            discard(got)
            raise
        return Outcome(OutcomeKind.DONE, files=got, exec_seconds=execution_seconds(entry))


def execution_seconds(entry: dict) -> float | None:
    """Seconds from execution_start to execution_success in a history entry (None if not recorded)."""
    stamps = {}
    for event, data in (entry.get("status") or {}).get("messages") or []:
        if isinstance(data, dict) and "timestamp" in data:
            stamps[event] = data["timestamp"]
    if "execution_start" in stamps and "execution_success" in stamps:
        return round(max(0, stamps["execution_success"] - stamps["execution_start"]) / 1000, 3)
    return None
