"""Stylising a video file into a video file in flat memory, resumable.

Frames are decoded as they go, stylised in chunks with the stabilisers' :class:`FrameState`
carried from chunk to chunk, and encoded as they go, so memory does not grow with the
video's length. The encoded video is written in segments of ``segment_frames`` frames to a
hidden work folder beside the output (``.<name>.parts``); after each segment a small state
file (safetensors: the stabilisers' tensors, with the job and progress as JSON metadata)
records how far the run got. At the end the segments' packets are joined (remuxed, not
re-encoded) with the input's audio into a temporary file that is renamed onto the output.

A run stopped by an error or Ctrl-C leaves no output file. With ``resume`` it keeps the
work folder, and the next ``resume`` run with the same job continues after the last whole
segment: chunks never cross a segment boundary, so a resumed run computes exactly what an
uninterrupted one does.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .adaattn import StyleSource
from .files import atomic_output
from .frames import FrameState, LayerState, Stabilizer, stylize_frames
from .images import resize_max_side
from .model import AdaAttNModel
from .pipeline import StylizeOptions
from .progress import Progress, expect, step
from .vgg import VGGEncoder
from .video_io import (
    DEFAULT_CRF,
    FrameFolderReader,
    Source,
    VideoEncoder,
    VideoError,
    Window,
    container_format,
    join_segments,
    open_reader,
)

STATE_FILE = "state.safetensors"
STATE_VERSION = 1


@dataclass(frozen=True)
class VideoResult:
    output: Path
    frames: int
    resumed_from: int  # frames taken from an earlier run's segments
    audio: str  # "copied", "re-encoded" or "none"
    width: int
    height: int


def work_folder(output: Path) -> Path:
    return output.parent / f".{output.name}.parts"


# --- the stabilisers' state as tensors --------------------------------------------------------------


def state_tensors(state: FrameState) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, layer in state.layers.items():
        for field in ("key", "mean", "std"):
            value = getattr(layer, field)
            if value is not None:
                out[f"layers.{name}.{field}"] = value
        if layer.norm is not None:
            out[f"layers.{name}.norm_mean"], out[f"layers.{name}.norm_std"] = layer.norm
    if state.cut.key is not None:
        out["cut.key"] = state.cut.key
    if state.cut.typical is not None:
        out["cut.typical"] = torch.tensor(state.cut.typical, dtype=torch.float64)
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def state_from_tensors(tensors: dict[str, Tensor], device: torch.device) -> FrameState:
    state = FrameState()
    for key, value in tensors.items():
        parts = key.split(".")
        if parts[0] == "layers":
            layer = state.layers.setdefault(parts[1], LayerState())
            if parts[2] in ("key", "mean", "std"):
                setattr(layer, parts[2], value.to(device))
        elif key == "cut.key":
            state.cut.key = value.to(device)
        elif key == "cut.typical":
            state.cut.typical = float(value)
    for name, layer in state.layers.items():
        if f"layers.{name}.norm_mean" in tensors:
            layer.norm = (tensors[f"layers.{name}.norm_mean"].to(device), tensors[f"layers.{name}.norm_std"].to(device))
    return state


def save_state(folder: Path, job: dict, frames_done: int, segments: Sequence[list], state: FrameState) -> None:
    meta = {"version": STATE_VERSION, "job": job, "frames_done": frames_done, "segments": list(segments)}
    with atomic_output(folder / STATE_FILE) as tmp:
        save_file(state_tensors(state), str(tmp), metadata={"progress": json.dumps(meta)})


def load_state(folder: Path, job: dict, device: torch.device) -> tuple[int, list[list], FrameState] | None:
    """(frames done, [segment file, first pts], stabiliser state) of an earlier run of the same job, or None."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("progress", "{}"))
    if meta.get("version") != STATE_VERSION or meta.get("job") != job:
        raise VideoError(f"{folder}: this unfinished run had other inputs or settings; "
                         "run without --resume to start over")  # fmt: skip
    segments = list(meta["segments"])
    if not all((folder / name).is_file() for name, _ in segments):
        raise VideoError(f"{folder}: segments of the unfinished run are missing; run without --resume to start over")
    return int(meta["frames_done"]), segments, state_from_tensors(load_file(str(path)), device)


# --- the streaming loop --------------------------------------------------------------------------


def to_uint8(frames: Tensor) -> np.ndarray:
    """[N,3,H,W] float (unclamped) -> [N,H,W,3] uint8, rounded."""
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_float(frames: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype, max_side: int) -> Tensor:
    rgb = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32) / 255
    return resize_max_side(rgb, max_side).to(dtype)


def stylize_video(
    model: AdaAttNModel,
    encoder: VGGEncoder,
    source: Source,
    output: str | Path,
    sources: Sequence[StyleSource],
    options: StylizeOptions = StylizeOptions(),
    stabilizer: Stabilizer = Stabilizer(),
    *,
    chunk: int = 4,
    segment_frames: int = 240,
    max_side: int = 0,
    crf: int = DEFAULT_CRF,
    window: Window = Window(),
    frame_rate: Fraction | None = None,
    resume: bool = False,
    job: dict | None = None,
    progress: Progress | None = None,
) -> VideoResult:
    """Stylise the video ``source`` into ``output`` (suffix .mp4, .m4v, .mov or .mkv).

    ``source`` may also be a folder of frames (natural name order), played at ``frame_rate``.

    ``sources`` hold the encoded style(s), batch 1. ``job`` is anything JSON that identifies
    the inputs and settings (checked when resuming). ``progress`` counts frames.
    """
    output = Path(output)
    fmt = container_format(output)
    if chunk < 1 or segment_frames < 1:
        raise ValueError("chunk and segment_frames must be >= 1")
    device = next(encoder.parameters()).device
    dtype = next(encoder.parameters()).dtype
    folder = work_folder(output)
    job = {
        "job": job or {},
        "chunk": chunk,
        "segment_frames": segment_frames,
        "max_side": max_side,
        "crf": crf,
        "window": [window.start, window.duration],
        "frame_rate": str(frame_rate),
        "stabilizer": repr(stabilizer),
        "options": repr(replace(options, budget_bytes=None)),
    }  # the workspace size does not change results
    job = json.loads(json.dumps(job))  # as it reads back from the state file
    done, segments, state = 0, [], FrameState()
    with open_reader(source, window, frame_rate) as reader:  # opened first: a bad input changes nothing on disk
        info = reader.info
        if resume:
            earlier = load_state(folder, job, device)
            if earlier is not None:
                done, segments, state = earlier
        else:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        resumed_from = done
        expect(progress, max(info.frames, done))
        if done:
            step(progress, done)
        size: tuple[int, int] | None = None
        writer: VideoEncoder | None = None
        name = ""
        try:
            frames = reader.frames()
            for _ in range(done):  # decoded, not stylised: an exact restart needs no seeking
                if next(frames, None) is None:
                    raise VideoError(f"{reader.name}: has fewer frames than the unfinished run already wrote")
            pending: list[np.ndarray] = []
            pending_pts: list[int] = []
            in_segment = 0
            finished = False
            while not finished:
                item = next(frames, None)
                if item is not None:
                    pending.append(item[0])
                    pending_pts.append(item[1])
                limit = min(chunk, segment_frames - in_segment)
                if len(pending) < limit and item is not None:
                    continue
                finished = item is None
                if pending:
                    clip = to_float(pending, device, dtype, max_side)
                    if writer is None:
                        name = f"seg_{len(segments):06d}.mp4"
                        height, width = clip.shape[-2:]
                        writer = VideoEncoder(folder / f"{name}.tmp", width, height, info.frame_rate,
                                              info.time_base, crf=crf)  # fmt: skip
                    for out in stylize_frames(model, encoder, clip, sources, options, stabilizer, chunk=len(pending),
                                              state=state):  # fmt: skip
                        size = (int(out.shape[-1]), int(out.shape[-2]))
                        writer.write(to_uint8(out), pending_pts)
                    in_segment += len(pending)
                    done += len(pending)
                    step(progress, len(pending))
                    pending, pending_pts = [], []
                if writer is not None and (in_segment >= segment_frames or finished):
                    writer.close()
                    (folder / f"{name}.tmp").replace(folder / name)
                    segments.append([name, writer.offset])
                    writer, in_segment = None, 0
                    save_state(folder, job, done, segments, state)
        except BaseException:
            if writer is not None:
                writer.abort()
                (folder / f"{name}.tmp").unlink(missing_ok=True)
            if not resume:
                shutil.rmtree(folder, ignore_errors=True)
            raise
    try:
        with atomic_output(output) as tmp:
            parts = [(folder / name, Fraction(offset) * info.time_base) for name, offset in segments]
            audio_source = None if isinstance(reader, FrameFolderReader) else source
            audio = join_segments(parts, tmp, fmt, audio_source, window, info.frame_rate)
    except BaseException:
        if not resume:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    if size is None:  # every frame came from an earlier run
        size = (info.width, info.height)
    return VideoResult(output, done, resumed_from, audio, *size)
