"""Convert released ``.pth`` weights (AdaAttN and AdaIN layouts) to safetensors.

Each input file is recognised from its tensor names and shapes (never its file name),
renamed through the literal tables below and grouped into our files:

  ============================  ==========================================  ===================================
  released file                 recognised as                               goes into
  ============================  ==========================================  ===================================
  vgg_normalised.pth            VGG encoder (53-child Sequential)           vgg_normalised.safetensors
  decoder.pth (AdaIN)           AdaIN decoder                               adain_decoder.safetensors
  latest_net_adaattn_3.pth      relu3_1 attention (f, g, h)                 adaattn_official.safetensors
  latest_net_transformer.pth    relu4_1 + relu5_1 attention and merge conv  adaattn_official.safetensors
  latest_net_decoder.pth        image decoder (skip connection)             adaattn_official.safetensors
  video latest_net_transformer  relu3_1 attention (f, g, h)                 adaattn_official_video.safetensors
  video latest_net_decoder.pth  video decoder                               adaattn_official_video.safetensors
  ============================  ==========================================  ===================================

The image model's ``adaattn_3`` file and the video model's ``transformer`` file have the
same names and shapes; such a relu3_1 attention file joins the decoder in its own folder
(or the only decoder given). ``.pth`` files are read with ``torch.load(weights_only=True)``
only: a pickle that needs code to load is refused, never executed.

The authors' ``.zip`` archives are read as downloaded, in memory (nothing is extracted):
an archive with an absolute or ``..`` member path, a symlink, an encrypted member, more than
``MAX_ZIP_MEMBERS`` members or more than ``MAX_ZIP_BYTES`` uncompressed is refused whole;
members that are not ``.pth``/``.pt`` files (read-me files, macOS ``__MACOSX`` metadata) are
ignored with a note.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..weights import ENCODER, WeightsError, check_tensors, detect_kind, expected_shapes, save_weights

# Released tensor-name prefix -> our name, per source layout. A prefix mapped to None is
# in the released file but not kept (conv5_2..conv5_4 of the VGG feed no tap).
VGG_MAP = {"0": "preprocess", "2": "conv1_1", "5": "conv1_2", "9": "conv2_1", "12": "conv2_2",
           "16": "conv3_1", "19": "conv3_2", "22": "conv3_3", "25": "conv3_4", "29": "conv4_1",
           "32": "conv4_2", "35": "conv4_3", "38": "conv4_4", "42": "conv5_1",
           "45": None, "48": None, "51": None}  # fmt: skip
_DECODER_TAIL = ("conv3_4", "conv3_3", "conv3_2", "conv3_1", "conv2_2", "conv2_1", "conv1_2", "conv1_1")
_TAIL_INDICES = ("1", "4", "7", "10", "14", "17", "21", "24")  # convs of the reference decoder_layer_2
ADAIN_DECODER_MAP = {"1": "decoder.conv4_1"} | {
    i: f"decoder.{n}" for i, n in zip(("5", "8", "11", "14", "18", "21", "25", "28"), _DECODER_TAIL)
}
IMAGE_DECODER_MAP = {"decoder_layer_1.1": "decoder.conv4_1"} | {
    f"decoder_layer_2.{i}": f"decoder.{n}" for i, n in zip(_TAIL_INDICES, _DECODER_TAIL)
}
VIDEO_DECODER_MAP = {f"decoder.{i}": f"decoder.{n}" for i, n in zip(_TAIL_INDICES, _DECODER_TAIL)}
TRANSFORMER_MAP = {
    **{f"attn_adain_4_1.{p}": f"attention.relu4_1.{p}" for p in "fgh"},
    **{f"attn_adain_5_1.{p}": f"attention.relu5_1.{p}" for p in "fgh"},
    "merge_conv": "fusion.merge_conv",
}
RELU3_1_ATTENTION_MAP = {p: f"attention.relu3_1.{p}" for p in "fgh"}

# Source layout -> (name table, the kind of our file whose shapes it must match, description).
LAYOUTS: dict[str, tuple[Mapping[str, str | None], str, str]] = {
    "vgg": (VGG_MAP, ENCODER, "VGG encoder"),
    "adain_decoder": (ADAIN_DECODER_MAP, "lite", "AdaIN decoder"),
    "image_decoder": (IMAGE_DECODER_MAP, "official-image", "AdaAttN image decoder"),
    "transformer": (TRANSFORMER_MAP, "official-image", "AdaAttN relu4_1/relu5_1 attention and merge conv"),
    "relu3_1_attention": (RELU3_1_ATTENTION_MAP, "official-image", "AdaAttN relu3_1 attention"),
    "video_decoder": (VIDEO_DECODER_MAP, "official-video", "AdaAttN video decoder"),
}
UNUSED_VGG_SHAPE = (512, 512, 3, 3)
WEIGHT_SUFFIXES = (".pth", ".pt")
MAX_ZIP_MEMBERS = 1000
MAX_ZIP_BYTES = 2 * 2**30  # uncompressed: the authors' archives hold about 100 MB

# Our output files: kind -> (file name, the source layouts it is made of).
OUTPUTS = {
    ENCODER: ("vgg_normalised.safetensors", ("vgg",)),
    "lite": ("adain_decoder.safetensors", ("adain_decoder",)),
    "official-image": ("adaattn_official.safetensors", ("relu3_1_attention", "transformer", "image_decoder")),
    "official-video": ("adaattn_official_video.safetensors", ("relu3_1_attention", "video_decoder")),
}


def rename(state: Mapping[str, Tensor], table: Mapping[str, str | None]) -> dict[str, Tensor]:
    """Rename ``prefix.rest`` keys through ``table`` (prefix -> new prefix, None drops)."""
    out = {}
    for key, value in state.items():
        prefix, _, rest = key.rpartition(".")
        new = table[prefix]
        if new is not None:
            out[f"{new}.{rest}"] = value
    return out


def source_shapes(layout: str) -> dict[str, tuple[int, ...]]:
    """Released tensor name -> shape for a source layout, derived from our module shapes."""
    table, kind, _ = LAYOUTS[layout]
    ours = expected_shapes(kind)
    shapes = {}
    for prefix, new in table.items():
        for param in ("weight", "bias"):
            if new is None:
                shapes[f"{prefix}.{param}"] = UNUSED_VGG_SHAPE if param == "weight" else UNUSED_VGG_SHAPE[:1]
            else:
                shapes[f"{prefix}.{param}"] = ours[f"{new}.{param}"]
    return shapes


@dataclass(frozen=True)
class SourceFile:
    path: Path
    layout: str
    tensors: dict[str, Tensor]  # already renamed to our names
    sha256: str


def read_pth(path: Path, data: bytes | None = None) -> dict[str, Tensor]:
    """A plain state dict from a ``.pth`` file (or its ``data``), loaded without executing any code."""
    try:
        obj = torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: (GLOBAL [\w.]+)", str(error))
        if found:  # a class or function to import and call: code we will not run
            raise WeightsError(
                f"{path}: refused: it needs code to unpickle ({found.group(1)}); only plain tensors are read"
            ) from None
        raise WeightsError(
            f"{path}: not a readable PyTorch weights file (unsupported pickle content; only plain tensors are read)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({error})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def recognise(path: Path, state: Mapping[str, Tensor]) -> str | None:
    """The source layout ``state`` has, None if it has none; errors name file and key."""
    for layout in LAYOUTS:
        expected = source_shapes(layout)
        if set(state) == set(expected):
            for name, shape in expected.items():
                if tuple(state[name].shape) != shape:
                    raise WeightsError(
                        f"{path}: tensor {name!r} has shape {list(state[name].shape)}, expected {list(shape)} "
                        f"({LAYOUTS[layout][2]})"
                    )
            return layout
    overlap = {layout: len(set(state) & set(source_shapes(layout))) for layout in LAYOUTS}
    best = max(overlap, key=overlap.get)
    expected = source_shapes(best)
    if overlap[best] * 2 >= len(expected):  # clearly meant as this layout, but broken
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        what = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise WeightsError(f"{path}: incomplete {LAYOUTS[best][2]} file: {what}")
    return None


def load_source(path: Path, data: bytes | None = None) -> SourceFile | None:
    """A recognised source file (``data``: its bytes, when it is a member of an archive at ``path``)."""
    state = read_pth(path, data)
    layout = recognise(path, state)
    if layout is None:
        return None
    digest = hashlib.sha256(path.read_bytes() if data is None else data).hexdigest()
    return SourceFile(path, layout, rename(state, LAYOUTS[layout][0]), digest)


def zip_members(archive: Path) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The ``.pth``/``.pt`` members of a zip archive, read in memory: ([(name, bytes)], notes).

    The whole archive is checked before any member is read; anything unsafe refuses it.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_MEMBERS:
                raise WeightsError(f"{archive}: refused: {len(infos)} members (at most {MAX_ZIP_MEMBERS})")
            total = 0
            wanted, ignored = [], []
            for info in infos:
                name = info.filename
                parts = name.replace("\\", "/").split("/")
                if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                    raise WeightsError(f"{archive}: refused: member {name!r} points outside the archive")
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise WeightsError(f"{archive}: refused: member {name!r} is a symbolic link")
                if info.flag_bits & 0x1:
                    raise WeightsError(f"{archive}: refused: member {name!r} is encrypted")
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    raise WeightsError(
                        f"{archive}: refused: more than {MAX_ZIP_BYTES // 2**30} GiB uncompressed (a zip bomb?)"
                    )
                if info.is_dir():
                    continue
                macos = parts[0] == "__MACOSX" or parts[-1].startswith("._")
                if name.lower().endswith(WEIGHT_SUFFIXES) and not macos:
                    wanted.append(info)
                else:
                    ignored.append(name)
            members = [(info.filename, zf.read(info)) for info in wanted]  # sizes capped above; CRCs checked
    except zipfile.BadZipFile as error:
        raise WeightsError(f"{archive}: not a readable zip archive ({error})") from None
    notes = [f"ignored {len(ignored)} member(s) of {archive} that are not .pth files"] if ignored else []
    return members, notes


def collect_sources(inputs: Sequence[str | os.PathLike]) -> tuple[list[SourceFile], list[str]]:
    """Read every input (files, zip archives, or folders searched for ``.pth``/``.pt``); returns (sources, notes)."""
    sources, notes = [], []
    for item in inputs:
        item = Path(item)
        if item.is_file() and item.suffix.lower() == ".zip":
            members, zip_notes = zip_members(item)
            notes += zip_notes
            if not members:
                raise WeightsError(f"{item}: no .pth files in this archive")
            for name, data in members:
                source = load_source(item / name, data)
                if source is None:
                    notes.append(f"skipped {item / name}: not a known AdaAttN/AdaIN weights layout")
                else:
                    sources.append(source)
        elif item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
            if not files:
                raise WeightsError(f"{item}: no .pth files in this folder")
            for f in files:
                source = load_source(f)
                if source is None:
                    notes.append(f"skipped {f}: not a known AdaAttN/AdaIN weights layout")
                else:
                    sources.append(source)
        elif item.is_file():
            source = load_source(item)
            if source is None:
                raise WeightsError(f"{item}: not a known AdaAttN/AdaIN weights layout (tensor names and shapes)")
            sources.append(source)
        else:
            raise WeightsError(f"{item}: no such file or folder")
    return sources, notes


def group_sources(sources: Sequence[SourceFile]) -> dict[str, list[SourceFile]]:
    """Group source files into output kinds; relu3_1 attention files join a decoder's model."""
    by_layout: dict[str, list[SourceFile]] = {}
    for s in sources:
        by_layout.setdefault(s.layout, []).append(s)
    for layout, files in by_layout.items():
        if len(files) > 1 and layout != "relu3_1_attention":
            names = ", ".join(str(f.path) for f in files)
            raise WeightsError(f"two {LAYOUTS[layout][2]} files ({names}); convert one model at a time")
    groups: dict[str, list[SourceFile]] = {}
    for kind, (_, layouts) in OUTPUTS.items():
        present = [by_layout[l][0] for l in layouts if l in by_layout and l != "relu3_1_attention"]
        if present:
            groups[kind] = present
    decoders = {k: groups[k][-1].path.parent for k in ("official-image", "official-video") if k in groups}
    for attn in by_layout.get("relu3_1_attention", []):
        owners = [k for k, folder in decoders.items() if folder == attn.path.parent]
        if not owners and len(decoders) == 1:
            owners = list(decoders)
        if len(owners) != 1:
            raise WeightsError(
                f"{attn.path}: a relu3_1 attention file, but it is not clear which model it belongs to; "
                "put it in the folder of its decoder, or convert one model at a time"
            )
        if any(s.layout == "relu3_1_attention" for s in groups[owners[0]]):
            raise WeightsError(f"{attn.path}: a second relu3_1 attention file for the {owners[0]} model")
        groups[owners[0]].append(attn)
    for kind, files in groups.items():
        have = {s.layout for s in files}
        missing = [LAYOUTS[l][2] for l in OUTPUTS[kind][1] if l not in have]
        if missing:
            raise WeightsError(
                f"the {kind} model is incomplete: missing the {', '.join(missing)} file "
                f"(given: {', '.join(str(s.path) for s in files)})"
            )
    return groups


@dataclass(frozen=True)
class Converted:
    kind: str
    path: Path
    sources: tuple[str, ...]


def convert(
    inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, half: bool = False
) -> tuple[list[Converted], list[str]]:
    """Convert released weights to safetensors in ``out_dir``; returns (written, notes).

    Every input is read and validated before anything is written, so bad input leaves
    ``out_dir`` unchanged. ``half`` stores float16 tensors (about half the size).
    """
    sources, notes = collect_sources(inputs)
    if not sources:
        raise WeightsError("no AdaAttN or AdaIN weights found in the given inputs")
    groups = group_sources(sources)
    planned = []
    for kind, files in groups.items():
        tensors: dict[str, Tensor] = {}
        for s in files:
            tensors.update(s.tensors)
        if half:
            tensors = {k: v.half() for k, v in tensors.items()}
        origin = ", ".join(str(s.path) for s in files)
        detect_kind({k: tuple(v.shape) for k, v in tensors.items()}, origin)
        check_tensors(tensors, origin)  # all validated before the first write
        planned.append((kind, files, tensors))
    written = []
    for kind, files, tensors in planned:
        metadata = {
            "sources": ",".join(s.path.name for s in files),
            "sources_sha256": ",".join(s.sha256 for s in files),
        }
        path = save_weights(Path(out_dir) / OUTPUTS[kind][0], tensors, kind, metadata)
        written.append(Converted(kind, path, tuple(s.path.name for s in files)))
    return written, notes
