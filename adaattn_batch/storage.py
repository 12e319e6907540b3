"""The manifest on disk: atomic writes, the lock that keeps two runs apart, reading and checking it.

Every write goes to a temporary file in the same folder, flushed to disk, then ``os.replace``:
a crash or Ctrl-C at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import IO

from .errors import BatchError

FORMAT = "adaattn-batch-manifest"
VERSION = 1


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


def acquire_lock(path: Path) -> IO:
    """Hold ``.<name>.lock`` beside ``path`` for the whole run (close the returned file to release it)."""
    lock = path.with_name(f".{path.name}.lock")  # kept: removing it would race with a new run
    fh = open(lock, "a+")  # noqa: SIM115  (held open for the whole run: that is the lock)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock, run one batch per folder
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise BatchError(f"{path} is in use by another adaattn-batch run (lock {lock.name})") from None
    return fh


def read_manifest(path: Path) -> dict | None:
    """The manifest's JSON (None if there is none); a file that is not one of ours is a BatchError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BatchError(f"{path}: cannot read the manifest ({e.strerror or e})") from e
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BatchError(f"{path}: the manifest is not valid JSON ({e}); move it away to start over") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BatchError(f"{path}: not an adaattn-batch manifest; use another output folder or --manifest")
    if data.get("version", 0) > VERSION:
        raise BatchError(f"{path}: made by a newer adaattn-batch (manifest version {data['version']})")
    if not isinstance(data.setdefault("jobs", {}), dict) or not isinstance(data.setdefault("hashes", {}), dict):
        raise BatchError(f"{path}: the manifest's jobs or hashes are not objects; move it away to start over")
    return data


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


def now() -> str:
    """Local time with milliseconds, as the manifest records it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime()) + f"{time.time() % 1:.3f}"[1:]
