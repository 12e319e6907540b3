"""Jobs of a batch: the grid of contents x styles, or a frame folder split into ranges.

A job's id names its outputs: ``<content>__<style>`` in a grid, ``<first>-<last>`` (frame
stems) for a range. Its key hashes the recipe (workflow, bindings, settings) together with
the bytes of its input files, so a changed input is never mistaken for a finished job.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BatchError
from .workflow import Target, apply, canonical_hash, coerce, find_nodes, graph_hash, parse_bind, parse_set, resolve

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
DEFAULT_BINDINGS = {
    "grid": {"content": "Content.image", "style": "Style.image"},
    "frames": {"frames": "Frames.folder", "style": "Style.image"},
}
UPLOAD_FOLDER = "adaattn_batch"  # in each server's input directory


class OutputMismatch(ValueError):
    """The workflow produced outputs that cannot be named (none, or not one per frame)."""


@dataclass(frozen=True)
class Job:
    id: str
    files: dict[str, tuple[Path, ...]]  # binding name -> local files
    folders: frozenset[str] = frozenset()  # bindings whose files go up as one folder (frames)
    warmup: int = 0  # leading frames that only warm the stabilisers up; their outputs are dropped
    subdir: str = ""  # output sub-folder (frames in several styles)
    key: str = ""

    def output_names(self, produced: list[str]) -> list[str | None]:
        """The names (relative to the output folder) for the files the server produced, None = drop."""
        if not produced:
            raise OutputMismatch("the workflow saved no output files (does it end in a SaveImage node?)")
        exts = [os.path.splitext(name)[1].lower() or ".png" for name in produced]
        prefix = f"{self.subdir}/" if self.subdir else ""
        if "frames" in self.folders:
            frames = self.files["frames"]
            if len(produced) != len(frames):
                raise OutputMismatch(f"the workflow saved {len(produced)} files for {len(frames)} frames; "
                                     "use --output-node to pick the node that saves one image per frame")  # fmt: skip
            return [None if k < self.warmup else f"{prefix}{frame.stem}{ext}"
                    for k, (frame, ext) in enumerate(zip(frames, exts))]  # fmt: skip
        if len(produced) == 1:
            return [f"{prefix}{self.id}{exts[0]}"]
        width = len(str(len(produced)))
        return [f"{prefix}{self.id}_{k:0{width}d}{ext}" for k, ext in enumerate(exts, 1)]


@dataclass
class Plan:
    """Everything a batch needs besides the servers: the prepared workflow and the jobs."""

    mode: str
    workflow: dict  # with the fixed --set values applied
    bindings: dict[str, Target]  # binding name -> input, only the ones this batch uses
    file_sets: dict[Target, Path]  # --set NODE.INPUT=@file: uploaded once per server
    jobs: list[Job]
    recipe: str
    recipe_info: dict
    output_nodes: frozenset[str] | None = None
    describe: str = ""

    @property
    def batch_id(self) -> str:
        return self.recipe[:12]


class FileHasher:
    """SHA-256 of local files, remembered by (path, size, mtime) across runs through the manifest."""

    def __init__(self, cache: dict[str, list] | None = None):
        self.cache = cache if cache is not None else {}

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self.cache.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        self.cache[key] = [st.st_size, st.st_mtime_ns, digest.hexdigest()]
        return self.cache[key][2]


def natural_key(name: str) -> tuple:
    """``frame_2`` before ``frame_10``: runs of digits compare as numbers, the rest case-insensitively; ties
    by the plain name. (The same rule as the engine's ``sorting.natural_key``: this client imports nothing of
    the engine.)"""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(t), "") if i % 2 else (1, 0, t.casefold()) for i, t in enumerate(parts) if t), name


def expand_images(paths: list[str | Path], what: str) -> list[Path]:
    """Image files from files and folders (a folder's images in natural name order, not recursive)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                           key=lambda f: natural_key(f.name))  # fmt: skip
            if not found:
                raise BatchError(f"{p}: no images in this {what} folder ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise BatchError(f"{p}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            out.append(p)
        else:
            raise BatchError(f"{p}: no such {what} file or folder")
    return out


def safe_name(name: str) -> str:
    """``name`` with only characters every file system and URL takes."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"


# Auto warm-up: enough leading frames that the workflow's temporal stabilisers forget their fresh start to
# this fraction (an exponential average of momentum m keeps m**K of it after K frames). Measured on a clip
# (README, benchmarks/bench_joins.py): with smoothing 0.9, 24 frames (8% left) made range joins as smooth
# as the frames inside a range; 12 frames left joins 5% rougher, none 2.8x.
WARMUP_RESIDUAL = 0.08
STABILISER_INPUTS = ("temporal_smoothing", "shared_normalization")


def auto_warmup(workflow: dict) -> int:
    """Warm-up frames for ``workflow`` (API format, overrides applied): what its strongest stabiliser needs."""
    frames = 0
    for node in workflow.values():
        for name in STABILISER_INPUTS:
            value = node.get("inputs", {}).get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
                frames = max(frames, math.ceil(math.log(WARMUP_RESIDUAL) / math.log(value)))
    return frames


def make_plan(
    workflow: dict,
    mode: str,
    *,
    contents: list[Path] = (),
    styles: list[Path] = (),
    frames: list[Path] = (),
    range_size: int = 0,
    warmup: int | None = 0,
    binds: list[str] = (),
    sets: list[str] = (),
    output_node: list[str] = (),
    hasher: FileHasher | None = None,
) -> Plan:
    """Resolve bindings and overrides against ``workflow`` and list the jobs (see the module doc).

    ``warmup`` None: :func:`auto_warmup` of the workflow with its overrides."""
    hasher = hasher or FileHasher()
    names = dict(DEFAULT_BINDINGS[mode])
    for text in binds:
        name, spec = parse_bind(text)
        if name not in names:
            raise BatchError(f"--bind {text!r}: {mode} mode binds {' and '.join(names)}, not {name!r}")
        names[name] = spec
    used = ["content", "style"] if mode == "grid" else ["frames"] + (["style"] if styles else [])
    bindings = {name: resolve(workflow, names[name]) for name in used}
    taken: dict[str, str] = {}
    for name, target in bindings.items():
        if target.key in taken:
            raise BatchError(f"bindings {taken[target.key]!r} and {name!r} both name {target.label}")
        taken[target.key] = name

    values: dict[Target, Any] = {}
    file_sets: dict[Target, Path] = {}
    for text in sets:
        spec, raw = parse_set(text)
        target = resolve(workflow, spec)
        if target.key in taken:
            raise BatchError(f"--set {text!r}: {target.label} is bound to {taken[target.key]!r}; drop one")
        if raw.startswith("@"):
            path = Path(raw[1:])
            if not path.is_file():
                raise BatchError(f"--set {text!r}: no such file {path}")
            file_sets[target] = path
        else:
            values[target] = coerce(raw, workflow[target.node]["inputs"][target.input], spec)
    if mode == "frames":
        node = workflow[bindings["frames"].node]
        for name in ("first", "count"):  # the job's folder holds exactly its frames: load them all
            target = Target(bindings["frames"].node, name, f"{name} of the frames node")
            if name in node["inputs"] and not any(t.key == target.key for t in values):
                values[target] = 0
    prepared = apply(workflow, values)
    if warmup is None:
        warmup = auto_warmup(prepared) if mode == "frames" else 0

    outputs = None
    if output_node:
        outputs = frozenset(_output_node(workflow, spec) for spec in output_node)
    recipe_info = {
        "graph": graph_hash(prepared, [*bindings.values(), *file_sets]),
        "bindings": {name: t.key for name, t in sorted(bindings.items())},
        "files": {t.key: hasher.sha256(p) for t, p in sorted(file_sets.items(), key=lambda kv: kv[0].key)},
        "mode": mode,
        "outputs": sorted(outputs) if outputs else None,
    }
    if mode == "frames":
        recipe_info.update(range=range_size, warmup=warmup)
    recipe = canonical_hash(recipe_info)

    if mode == "grid":
        jobs, describe = _grid_jobs(contents, styles), f"grid: {len(contents)} content x {len(styles)} style images"
    else:
        jobs = _frame_jobs(frames, styles, range_size, warmup)
        describe = f"{len(frames)} frames in ranges of {range_size}" + (f" (warmup {warmup})" if warmup else "")
        if len(styles) > 1:
            describe += f" x {len(styles)} styles"
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        dup = min({i for i in ids if ids.count(i) > 1})
        raise BatchError(f"two jobs would both be named {dup!r} (inputs with the same file name); rename one")
    keyed = []
    for job in jobs:
        shas = {name: [hasher.sha256(p) for p in files] for name, files in sorted(job.files.items())}
        keyed.append(_with_key(job, canonical_hash({"recipe": recipe, "files": shas, "warmup": job.warmup})))
    return Plan(mode, prepared, bindings, file_sets, keyed, recipe, recipe_info, outputs, describe)


def _with_key(job: Job, key: str) -> Job:
    return Job(job.id, job.files, job.folders, job.warmup, job.subdir, key)


def _output_node(workflow: dict, spec: str) -> str:
    nodes = find_nodes(workflow, spec)
    if len(nodes) != 1:
        what = "several nodes" if nodes else "no node"
        raise BatchError(f"--output-node {spec!r}: {what} with that title or id")
    return nodes[0]


def _grid_jobs(contents: list[Path], styles: list[Path]) -> list[Job]:
    if not contents or not styles:
        raise BatchError("grid mode needs --content and --style (files or folders)")
    return [Job(f"{c.stem}__{s.stem}", {"content": (c,), "style": (s,)}) for c in contents for s in styles]


def _frame_jobs(frames: list[Path], styles: list[Path], size: int, warmup: int) -> list[Job]:
    if size < 1:
        raise BatchError(f"--range must be at least 1, got {size}")
    if warmup < 0:
        raise BatchError(f"--warmup must be at least 0, got {warmup}")
    if not frames:
        raise BatchError("no frames to run")
    jobs = []
    for style in styles or [None]:
        subdir = style.stem if style is not None and len(styles) > 1 else ""
        for first in range(0, len(frames), size):
            chunk = frames[first : first + size]
            lead = frames[max(0, first - warmup) : first]
            files: dict[str, tuple[Path, ...]] = {"frames": tuple(lead + chunk)}
            if style is not None:
                files["style"] = (style,)
            name = f"{chunk[0].stem}-{chunk[-1].stem}" + (f"__{style.stem}" if subdir else "")
            jobs.append(Job(name, files, frozenset({"frames"}), len(lead), subdir))
    return jobs
