"""Resuming from the manifest: which jobs are finished, which prompts to collect, which to run again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .attempt import TEMP_PREFIX
from .jobs import Job, Plan
from .manifest import JobRecord, JobState, Manifest
from .progress import Display
from .records import Sent, Server


@dataclass
class Resumed:
    pending: list[Job] = field(default_factory=list)  # to run, in plan order
    sent: dict[str, Sent] = field(default_factory=dict)  # job id -> its prompt from an earlier run, to collect
    done: list[str] = field(default_factory=list)  # finished before, outputs in place


def reconcile(plan: Plan, manifest: Manifest, servers: list[Server], out_dir: Path, display: Display) -> Resumed:
    """Bring the manifest's records in line with the plan: what is finished, what to collect, what to run."""
    by_url = {s.url: s for s in servers}
    resumed = Resumed()
    pending, skipped = resumed.pending, resumed.done
    for job in plan.jobs:
        rec = manifest.jobs.get(job.id)
        if rec is None or rec.key != job.key:
            manifest.start(job.id, job.key)
            if rec is not None:
                display.note(f"redo    {job.id}: its inputs changed")
            pending.append(job)
            continue
        if rec.state is JobState.DONE:
            missing = missing_outputs(rec, out_dir)
            if not missing:
                skipped.append(job.id)
                continue
            display.note(f"redo    {job.id}: output {missing} is missing or changed")
            manifest.apply(job.id, JobRecord.resume)
        elif rec.state is JobState.SUBMITTED:
            server = by_url.get(rec.server)
            if server is not None:
                resumed.sent[job.id] = Sent(server, rec.prompt_id)
                continue
            manifest.apply(job.id, JobRecord.withdraw)  # sent to a server not in this run
        elif rec.state is JobState.FAILED:  # a rerun tries again, with fresh attempts
            manifest.apply(job.id, JobRecord.resume)
        pending.append(job)
    return resumed


def missing_outputs(rec: JobRecord, out_dir: Path) -> str | None:
    """The first recorded output of a done job that is gone or has another size (None: all there)."""
    if not rec.outputs:
        return "(none recorded)"
    for out in rec.outputs:
        path = out_dir / out.file
        try:
            if path.stat().st_size != out.size:
                return out.file
        except OSError:
            return out.file
    return None


def remove_stale_temps(out_dir: Path) -> None:
    """Partial downloads of a run that was killed (only our own temporary names)."""
    if out_dir.is_dir():
        for path in out_dir.rglob(f"{TEMP_PREFIX}*.part"):
            path.unlink(missing_ok=True)
