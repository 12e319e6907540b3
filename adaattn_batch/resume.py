"""Resuming from the manifest: which jobs are finished, which prompts to collect, which to run again."""

from __future__ import annotations

from pathlib import Path

from .attempt import TEMP_PREFIX
from .jobs import Job, Plan
from .manifest import Manifest, new_record
from .progress import Display
from .servers import Server


def reconcile(plan: Plan, manifest: Manifest, servers: list[Server], out_dir: Path,
              display: Display) -> tuple[list[Job], dict[str, tuple[Server, str]], list[str]]:  # fmt: skip
    """Bring the manifest's records in line with the plan (the caller holds the manifest's lock).

    Returns the jobs to run, in plan order; the prompts an earlier run sent, to collect first
    (job id -> (server, prompt id)); and the ids of the jobs already done.
    """
    by_url = {s.url: s for s in servers}
    pending: list[Job] = []
    adopt: dict[str, tuple[Server, str]] = {}
    skipped: list[str] = []
    for job in plan.jobs:
        rec = manifest.jobs.get(job.id)
        if rec is None or rec.get("key") != job.key:
            manifest.jobs[job.id] = new_record(job.key)
            if rec is not None:
                display.note(f"redo    {job.id}: its inputs changed")
            pending.append(job)
            continue
        state = rec.get("state")
        if state == "done":
            missing = missing_outputs(rec, out_dir)
            if not missing:
                skipped.append(job.id)
                continue
            display.note(f"redo    {job.id}: output {missing} is missing or changed")
            rec.update(state="pending", outputs=[])
        elif state == "submitted" and rec.get("prompt_id"):
            server = by_url.get(rec.get("server"))
            if server is not None:
                adopt[job.id] = (server, rec["prompt_id"])
                continue
            rec.update(state="pending")
        elif state != "pending":  # failed before: a rerun tries again, with fresh attempts
            rec.update(state="pending", attempts=0, losses=0)
        pending.append(job)
    return pending, adopt, skipped


def missing_outputs(rec: dict, out_dir: Path) -> str | None:
    """The first recorded output of a done job that is gone or has another size (None: all there)."""
    if not rec.get("outputs"):
        return "(none recorded)"
    for out in rec["outputs"]:
        path = out_dir / out["file"]
        try:
            if path.stat().st_size != out["size"]:
                return out["file"]
        except OSError:
            return out["file"]
    return None


def remove_stale_temps(out_dir: Path) -> None:
    """Partial downloads of a run that was killed (only our own temporary names)."""
    if out_dir.is_dir():
        for path in out_dir.rglob(f"{TEMP_PREFIX}*.part"):
            path.unlink(missing_ok=True)
