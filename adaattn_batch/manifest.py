"""The batch manifest: one JSON file that says, for every job, where it stands.

It is rewritten after every state change, atomically (a temporary file in the same folder,
flushed to disk, then ``os.replace``), so a crash or Ctrl-C at any moment leaves either the
old or the new manifest, never a half-written one. A lock (on a hidden ``.<name>.lock``
beside it) keeps two runs off one manifest.

Job states: ``pending`` -> ``submitted`` (server, prompt_id; recorded *before* the prompt is
sent, with an id the client chose) -> ``done`` (output files with size and SHA-256) or
``failed`` (after its retries; every error is kept in ``errors``).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .errors import BatchError

FORMAT = "adaattn-batch-manifest"
VERSION = 1
STATES = ("pending", "submitted", "done", "failed")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, nothing between."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_record(key: str) -> dict[str, Any]:
    return {"state": "pending", "key": key, "attempts": 0, "losses": 0, "server": None, "prompt_id": None,
            "outputs": [], "errors": [], "submitted_at": None, "finished_at": None, "seconds": None}  # fmt: skip


class Manifest:
    """The manifest of one output folder. Every method is thread-safe; each change is saved at once."""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data
        self.lock = threading.RLock()
        self._lock_fh = None
        self._saved = ""  # what is on disk, to skip writes that change nothing

    @classmethod
    def open(cls, path: str | Path, recipe: str, recipe_info: dict, force_new: bool = False) -> Manifest:
        """Load the manifest at ``path`` (or start one) for a batch with this recipe.

        A manifest made with another recipe (workflow, bindings, settings) is refused, since its
        finished outputs would be mixed with different ones under the same names; ``force_new``
        keeps it as ``<name>.old`` and starts over.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = cls(path, {})
        manifest._acquire()
        try:
            data = manifest._load()
            if data is not None:
                manifest._saved = json.dumps({k: v for k, v in data.items() if k != "updated"}, sort_keys=True)
            if data is not None and data.get("recipe") != recipe:
                if not force_new:
                    why = explain_difference(data.get("recipe_info") or {}, recipe_info)
                    raise BatchError(f"{path} belongs to a different batch ({why}); use another output folder, "
                                     "or --force-new to start over there")  # fmt: skip
                os.replace(path, path.with_name(path.name + ".old"))
                data = None
            if data is None:
                now = _now()
                data = {"format": FORMAT, "version": VERSION, "recipe": recipe, "recipe_info": recipe_info,
                        "created": now, "updated": now, "hashes": {}, "jobs": {}}  # fmt: skip
            manifest.data = data
            manifest.save()
        except BaseException:
            manifest.close()
            raise
        return manifest

    def _load(self) -> dict | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BatchError(f"{self.path}: cannot read the manifest ({e.strerror or e})") from e
        try:
            data = json.loads(text)
        except ValueError as e:
            raise BatchError(f"{self.path}: the manifest is not valid JSON ({e}); move it away to start over") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BatchError(f"{self.path}: not an adaattn-batch manifest; use another output folder or --manifest")
        if data.get("version", 0) > VERSION:
            raise BatchError(f"{self.path}: made by a newer adaattn-batch (manifest version {data['version']})")
        data.setdefault("hashes", {})
        data.setdefault("jobs", {})
        return data

    def _acquire(self) -> None:
        lock = self.path.with_name(f".{self.path.name}.lock")  # kept: removing it would race with a new run
        fh = open(lock, "a+")  # noqa: SIM115  (held open for the whole run: that is the lock)
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock, run one batch per folder
            self._lock_fh = fh
            return
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise BatchError(f"{self.path} is in use by another adaattn-batch run (lock {lock.name})") from None
        self._lock_fh = fh

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    # ---- jobs

    @property
    def jobs(self) -> dict[str, dict]:
        return self.data["jobs"]

    @property
    def hashes(self) -> dict[str, list]:
        return self.data["hashes"]

    def update(self, job_id: str, **fields: Any) -> dict:
        """Change fields of a job's record and save."""
        with self.lock:
            record = self.jobs[job_id]
            record.update(fields)
            self.save()
            return record

    def add_error(self, job_id: str, kind: str, message: str, server: str | None, **fields: Any) -> dict:
        """Append an error to a job's record, change ``fields``, and save."""
        with self.lock:
            record = self.jobs[job_id]
            record["errors"].append({"time": _now(), "server": server, "kind": kind, "message": message})
            record.update(fields)
            self.save()
            return record

    def save(self) -> None:
        """Write the manifest if anything in it changed (a rerun with nothing to do leaves the file alone)."""
        with self.lock:
            body = json.dumps({k: v for k, v in self.data.items() if k != "updated"}, sort_keys=True)
            if body == self._saved:
                return
            self.data["updated"] = _now()
            text = json.dumps(self.data, indent=1, ensure_ascii=False)
            atomic_write(self.path, text.encode("utf-8"))
            self._saved = body


def explain_difference(old: dict, new: dict) -> str:
    """Which part of the recipe changed, in a few words."""
    if not old:
        return "made by an older run without recipe details"
    labels = {"graph": "the workflow", "bindings": "the bindings", "files": "the --set @files", "mode": "the mode",
              "outputs": "--output-node", "range": "--range", "warmup": "--warmup"}  # fmt: skip
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key in ("mode", "range", "warmup"):
                changed.append(f"{labels[key]} {old.get(key)} -> {new.get(key)}")
            else:
                changed.append(f"{labels.get(key, key)} changed")
    return ", ".join(changed) or "the recipe changed"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()) + f"{time.time() % 1:.3f}"[1:]
