"""Every job's state, as a state machine, and the manifest file that keeps it across runs.

A job goes ``pending`` -> ``submitted`` (server and prompt id, recorded *before* the prompt is
sent, with an id the client chose) -> ``done`` (output files with size and SHA-256) or
``failed`` (after its retries; every error is kept). Records are immutable: a transition is a
method that checks the current state, raises IllegalTransition if the move is not allowed, and
returns the new record; ``Manifest.apply`` stores it and saves the file at once. Nothing else
changes a job's state.

    submit     pending | submitted -> submitted   a prompt id is about to be sent (again)
    finish     submitted           -> done        outputs saved in place
    retry      pending | submitted -> pending     an attempt failed; another is allowed
    fail       pending | submitted -> failed      an attempt failed; no other is allowed
    lose       pending | submitted -> pending     its server stopped answering or lost the prompt
                                   -> failed      ... more often than allowed
    withdraw   submitted           -> pending     its prompt can no longer be collected
    resume     done | failed       -> pending     a rerun: output gone, or fresh retries
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import BatchError
from .storage import FORMAT, VERSION, acquire_lock, atomic_write, explain_difference, now, read_manifest

__all__ = ["ErrorKind", "IllegalTransition", "JobError", "JobRecord", "JobState", "Manifest", "OutputRecord"]


class JobState(Enum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    DONE = "done"
    FAILED = "failed"


class ErrorKind(Enum):
    VALIDATION = "validation"  # the server refused the prompt
    EXECUTION = "execution"  # it failed or timed out on the server, or the server answered oddly
    LOCAL = "local"  # on this machine (the output folder, a file that cannot be read)
    LOST = "lost"  # its server stopped answering, or forgot the prompt


class IllegalTransition(RuntimeError):
    """A transition asked of a job in a state it cannot leave that way (a bug in the caller)."""


@dataclass(frozen=True)
class OutputRecord:
    file: str  # relative to the output folder
    size: int
    sha256: str
    source: Mapping[str, str]  # the server's {filename, subfolder, type}


@dataclass(frozen=True)
class JobError:
    time: str
    server: str | None
    kind: ErrorKind
    message: str


PENDING, SUBMITTED, DONE, FAILED = JobState


@dataclass(frozen=True)
class JobRecord:
    key: str  # hash of the recipe and the job's input files
    state: JobState = JobState.PENDING
    attempts: int = 0  # attempts that ended in an error (lost servers are counted apart)
    losses: int = 0
    server: str | None = None
    prompt_id: str | None = None
    outputs: tuple[OutputRecord, ...] = ()
    errors: tuple[JobError, ...] = ()
    submitted_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None  # dispatch to outputs saved
    exec_seconds: float | None = None  # execution on the server

    # ---- transitions

    def submit(self, server: str, prompt_id: str) -> JobRecord:
        return self._move("submit", (PENDING, SUBMITTED), state=SUBMITTED, server=server, prompt_id=prompt_id,
                          submitted_at=now())  # fmt: skip

    def finish(self, server: str, outputs: list[OutputRecord], seconds: float,
               exec_seconds: float | None = None) -> JobRecord:  # fmt: skip
        return self._move("finish", (SUBMITTED,), state=DONE, server=server, outputs=tuple(outputs),
                          seconds=seconds, exec_seconds=exec_seconds, finished_at=now())  # fmt: skip

    def retry(self, kind: ErrorKind, message: str, server: str | None) -> JobRecord:
        return self._move("retry", (PENDING, SUBMITTED), state=PENDING, attempts=self.attempts + 1,
                          errors=self._with_error(kind, message, server))  # fmt: skip

    def fail(self, kind: ErrorKind, message: str, server: str | None) -> JobRecord:
        return self._move("fail", (PENDING, SUBMITTED), state=FAILED, attempts=self.attempts + 1,
                          errors=self._with_error(kind, message, server), finished_at=now())  # fmt: skip

    def lose(self, message: str, server: str, losses_allowed: int) -> JobRecord:
        """Back to pending, or failed once it lost its server more than ``losses_allowed`` times."""
        losses = self.losses + 1
        if losses > losses_allowed:
            message = f"{message} (lost {losses} times; it may be what brings the servers down)"
            return self._move("lose", (PENDING, SUBMITTED), state=FAILED, losses=losses, finished_at=now(),
                              errors=self._with_error(ErrorKind.LOST, message, server))  # fmt: skip
        return self._move("lose", (PENDING, SUBMITTED), state=PENDING, losses=losses,
                          errors=self._with_error(ErrorKind.LOST, message, server))  # fmt: skip

    def withdraw(self) -> JobRecord:
        return self._move("withdraw", (SUBMITTED,), state=PENDING)

    def resume(self) -> JobRecord:
        """A rerun runs it again: a done job whose output is gone, or a failed one, with fresh retries."""
        if self.state is DONE:
            return self._move("resume", (DONE,), state=PENDING, outputs=())
        return self._move("resume", (FAILED,), state=PENDING, attempts=0, losses=0)

    def _move(self, name: str, allowed: tuple[JobState, ...], **changes: Any) -> JobRecord:
        if self.state not in allowed:
            raise IllegalTransition(
                f"cannot {name} a {self.state.value} job (only {'/'.join(s.value for s in allowed)})"
            )
        return replace(self, **changes)

    def _with_error(self, kind: ErrorKind, message: str, server: str | None) -> tuple[JobError, ...]:
        return (*self.errors, JobError(now(), server, kind, message))

    # ---- JSON

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["outputs"] = [{**asdict(o), "source": dict(o.source)} for o in self.outputs]
        data["errors"] = [{**asdict(e), "kind": e.kind.value} for e in self.errors]
        return data

    @classmethod
    def from_json(cls, data: Any) -> JobRecord:
        """A record from the manifest; anything that is not one raises ValueError (or KeyError, TypeError)."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["state"] = JobState(data.get("state", "pending"))
        fields["outputs"] = tuple(OutputRecord(o["file"], int(o["size"]), str(o["sha256"]), dict(o.get("source") or {}))
                                  for o in data.get("outputs") or [])  # fmt: skip
        fields["errors"] = tuple(JobError(e.get("time", ""), e.get("server"), ErrorKind(e["kind"]), str(e["message"]))
                                 for e in data.get("errors") or [])  # fmt: skip
        record = cls(**fields)
        if not isinstance(record.key, str) or (record.state is SUBMITTED and not (record.server and record.prompt_id)):
            raise ValueError("a submitted job needs its server and prompt id")
        return record


class Manifest:
    """The manifest of one output folder. Thread-safe; each change is saved at once."""

    def __init__(self, path: Path, data: dict, jobs: dict[str, JobRecord]):
        self.path = path
        self.data = data  # everything but the jobs: format, recipe, input file hashes...
        self._jobs = jobs
        self._json = {job_id: rec.to_json() for job_id, rec in jobs.items()}  # kept with the records: saves are cheap
        self.lock = threading.RLock()
        self._lock_fh = None
        self._saved = ""  # what is on disk, to skip writes that change nothing
        self._deferred = 0

    @classmethod
    def open(cls, path: str | Path, recipe: str, recipe_info: dict, force_new: bool = False) -> Manifest:
        """Load the manifest at ``path`` (or start one) for a batch with this recipe.

        A manifest made with another recipe (workflow, bindings, settings) is refused, since its
        finished outputs would be mixed with different ones under the same names; ``force_new``
        keeps it as ``<name>.old`` and starts over.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = cls(path, {}, {})
        manifest._lock_fh = acquire_lock(path)
        try:
            data = read_manifest(path)
            if data is not None and data.get("recipe") != recipe:
                if not force_new:
                    why = explain_difference(data.get("recipe_info") or {}, recipe_info)
                    raise BatchError(f"{path} belongs to a different batch ({why}); use another output folder, "
                                     "or --force-new to start over there")  # fmt: skip
                path.replace(path.with_name(path.name + ".old"))
                data = None
            if data is None:
                data = {"format": FORMAT, "version": VERSION, "recipe": recipe, "recipe_info": recipe_info,
                        "created": now(), "hashes": {}, "jobs": {}}  # fmt: skip
            else:
                manifest._saved = json.dumps({k: v for k, v in data.items() if k != "updated"}, sort_keys=True)
            raw = data.pop("jobs")
            for job_id, record in raw.items():
                try:
                    manifest._jobs[job_id] = JobRecord.from_json(record)
                    manifest._json[job_id] = manifest._jobs[job_id].to_json()
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise BatchError(f"{path}: job {job_id!r} is not a valid record ({e}); move the manifest away "
                                     "to start over") from None  # fmt: skip
            manifest.data = data
            manifest.save()
        except BaseException:
            manifest.close()
            raise
        return manifest

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    @property
    def jobs(self) -> Mapping[str, JobRecord]:
        return MappingProxyType(self._jobs)

    @property
    def hashes(self) -> dict[str, list]:
        return self.data["hashes"]

    def start(self, job_id: str, key: str) -> JobRecord:
        """A new pending record for a job (a new one, or one whose inputs changed), saved."""
        return self._store(job_id, JobRecord(key))

    def apply(self, job_id: str, transition: Callable[..., JobRecord], *args: Any, **kwargs: Any) -> JobRecord:
        """``transition(record, *args, **kwargs)`` (a JobRecord method) on the job's record, stored and saved."""
        with self.lock:
            return self._store(job_id, transition(self._jobs[job_id], *args, **kwargs))

    def _store(self, job_id: str, record: JobRecord) -> JobRecord:
        with self.lock:
            self._jobs[job_id] = record
            self._json[job_id] = record.to_json()
            self.save()
            return record

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Many changes, one write at the end (resuming thousands of jobs)."""
        with self.lock:
            self._deferred += 1
            try:
                yield
            finally:
                self._deferred -= 1
                self.save()

    def save(self) -> None:
        """Write the manifest if anything in it changed (a rerun with nothing to do leaves the file alone)."""
        with self.lock:
            if self._deferred:
                return
            doc = {**self.data, "jobs": self._json}
            body = json.dumps({k: v for k, v in doc.items() if k != "updated"}, sort_keys=True)
            if body == self._saved:
                return
            doc["updated"] = now()
            atomic_write(self.path, json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8"))
            self._saved = body
