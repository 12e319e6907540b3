"""Are chunk, segment and range joins visible? Warping error across joins vs inside.

    python benchmarks/bench_joins.py [--clip FILE] [--style FILE] [--json results.json]

The clip is stylised file to file (``adaattn_model.video_stream.stylize_video``: decode, chunks
with the stabilisers' state carried over, H.264 segments joined at the end) with the lite weights
and the default stabilisers. The short-range warping error (x1000; flow of the input frames,
occlusions masked) is split into the frame pairs that straddle a join (frame t starts a chunk or
a segment) and the pairs inside. The same split of a one-shot run (all frames in one chunk, one
segment) is the control: it shows how much the two sets of pairs differ on this clip anyway.

The batch client's frame ranges (``python -m adaattn_batch ... --frames DIR --range N --warmup K``)
are measured the same way: its own job planner splits the clip into ranges, each range (with its
K warm-up frames in front) runs as one Stylize Frames prompt would, from a fresh stabiliser state
(``frames.stylize_frames``, chunks of 4), and the warm-up outputs are dropped as the client drops them.
Needs the lite weights (python -m adaattn_model fetch), PyAV and OpenCV.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adaattn_model.adaattn import StyleSource  # noqa: E402
from adaattn_model.flow import have_flow, warp  # noqa: E402
from adaattn_batch.jobs import _frame_jobs  # noqa: E402
from adaattn_model.frames import DEFAULT_STABILIZER, stylize_frames  # noqa: E402
from adaattn_model.images import load_image, resize_max_side  # noqa: E402
from adaattn_model.metrics import frame_pairs  # noqa: E402
from adaattn_model.models_folder import default_models_dir  # noqa: E402
from adaattn_model.pipeline import StylizeOptions, encode_style  # noqa: E402
from adaattn_model.video_io import VideoReader  # noqa: E402
from adaattn_model.video_stream import stylize_video  # noqa: E402
from adaattn_model.weights import load_encoder, load_model  # noqa: E402

DEFAULT_CLIP = ROOT / "assets" / "inputs" / "bbb_clip.mp4"
DEFAULT_STYLE = ROOT / "assets" / "inputs" / "udnie_picabia.jpg"
CONFIGS = [("one shot (control)", 10**6, 10**6), ("chunks of 4", 4, 240), ("chunks of 8", 8, 240),
           ("chunks of 4, segments of 8", 4, 8)]  # fmt: skip
RANGE = 6  # batch client: frames per job (--range), and the warm-up frames tried (--warmup)
WARMUPS = (0, 3, 6)


def batch_ranges(model, encoder, inputs: torch.Tensor, source: StyleSource, size: int, warmup: int) -> torch.Tensor:
    """The frames the batch client gets back for ``--range size --warmup warmup``, in order."""
    names = [Path(f"frame_{t:05d}.png") for t in range(len(inputs))]
    outputs = []
    for job in _frame_jobs(names, [], size, warmup):
        index = [names.index(p) for p in job.files["frames"]]
        result = torch.cat(list(stylize_frames(model, encoder, inputs[index], [source], StylizeOptions(),
                                               DEFAULT_STABILIZER, chunk=4)))  # fmt: skip
        outputs.append(result[job.warmup :].clamp(0, 1))
    return torch.cat(outputs)


def read_frames(path: Path) -> torch.Tensor:
    with VideoReader(path) as reader:
        frames = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f, _ in reader.frames()]
    return torch.stack(frames)


def pair_errors(outputs: torch.Tensor, pairs) -> list[float]:
    """Masked MSE of each frame t against frame t-1 warped onto it (t = 1 .. T-1)."""
    errors = []
    for i, (flow, mask) in enumerate(zip(pairs.flows, pairs.masks)):
        t = i + pairs.gap
        previous = warp(outputs[t - 1][None], flow[None])[0]
        diff = (outputs[t] - previous).pow(2).mean(0, keepdim=True)
        errors.append(float((diff * mask).sum() / mask.sum().clamp_min(1.0)))
    return errors


def split(errors: list[float], chunk: int, segment: int) -> tuple[float, float]:
    joins = [e for t, e in enumerate(errors, start=1) if t % chunk == 0 or t % segment == 0]
    inside = [e for t, e in enumerate(errors, start=1) if not (t % chunk == 0 or t % segment == 0)]
    return sum(joins) / len(joins), sum(inside) / len(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    parser.add_argument("--models", type=Path, help="models folder (default: the fetch folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--range", type=int, default=RANGE, help="batch client rows: frames per job")
    parser.add_argument("--warmups", type=int, nargs="*", default=WARMUPS, help="batch client rows: warm-up frames")
    args = parser.parse_args()
    if not have_flow():
        raise SystemExit('warping errors need OpenCV: pip install "adaattn[metrics]"')
    torch.set_grad_enabled(False)
    folder = args.models or default_models_dir()
    encoder = load_encoder(folder / "vgg_normalised.safetensors")
    model = load_model(folder / "adain_decoder.safetensors")
    inputs = read_frames(args.clip)
    pairs = frame_pairs(inputs, 1)
    style = resize_max_side(load_image(args.style)[0], 512)
    source = StyleSource(encode_style(encoder, style, model.family.layers))
    print(f"# {args.clip.name}: {len(inputs)} frames {inputs.shape[-1]}x{inputs.shape[-2]}, style {args.style.stem}, "
          f"lite, default stabilisers; warping error t-1 x1000")  # fmt: skip
    print("| run | across joins | inside | ratio | control ratio (one shot, same pairs) |")
    print("|---|---:|---:|---:|---:|")
    rows, control = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for name, chunk, segment in CONFIGS:
            out = Path(tmp) / f"{chunk}_{segment}.mp4"
            stylize_video(model, encoder, args.clip, out, [source], StylizeOptions(), DEFAULT_STABILIZER,
                          chunk=min(chunk, len(inputs)), segment_frames=min(segment, len(inputs) + 1))  # fmt: skip
            errors = pair_errors(read_frames(out), pairs)
            if control is None:
                control = errors
                print(f"| {name} | - | {1000 * sum(errors) / len(errors):.3f} (all pairs) | - | - |", flush=True)
                rows.append({"run": name, "all": sum(errors) / len(errors), "errors": errors})
                continue
            joins, inside = split(errors, chunk, segment)
            c_joins, c_inside = split(control, chunk, segment)
            rows.append({"run": name, "joins": joins, "inside": inside, "ratio": joins / inside,
                         "control_ratio": c_joins / c_inside, "errors": errors})  # fmt: skip
            print(f"| {name} | {1000 * joins:.3f} | {1000 * inside:.3f} | {joins / inside:.2f} | "
                  f"{c_joins / c_inside:.2f} |", flush=True)  # fmt: skip
        # quantised as the frames the client saves (8-bit PNG); the control is the frame path in one job
        def png_errors(size: int, warmup: int) -> list[float]:
            outputs = batch_ranges(model, encoder, inputs, source, size, warmup)
            return pair_errors((outputs * 255).round() / 255, pairs)

        frames_control = png_errors(len(inputs), 0)
        for size, warmup in ((args.range, w) for w in args.warmups):
            name = f"batch client: ranges of {size}, warmup {warmup}"
            errors = png_errors(size, warmup)
            joins, inside = split(errors, size, 10**6)
            c_joins, c_inside = split(frames_control, size, 10**6)
            rows.append({"run": name, "joins": joins, "inside": inside, "ratio": joins / inside,
                         "control_ratio": c_joins / c_inside, "errors": errors})  # fmt: skip
            print(f"| {name} | {1000 * joins:.3f} | {1000 * inside:.3f} | {joins / inside:.2f} | "
                  f"{c_joins / c_inside:.2f} |", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
