"""Temporal stability vs style strength of frame-sequence modes, on a real clip with the lite weights.

    python benchmarks/bench_video.py [--frames DIR] [--styles FILE ...] [--json results.json]

For each mode, every style stylises every frame; "lite" rows without "defaults" run its attention
as published (no global share, no detail step). The table gives the means over styles of:
short-range (t-1) and long-range (t-5) warping error (x1000; the input clip's own value
is the floor that flow errors set), the flow-free frame-difference error (x1000), SSIM to
the input frames and the style loss. Needs the lite weights (python -m adaattn_model fetch)
and OpenCV (pip install "adaattn[metrics]").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adaattn_model.adaattn import StyleSource  # noqa: E402
from adaattn_model.attention import AttentionSpec  # noqa: E402
from adaattn_model.flow import have_flow  # noqa: E402
from adaattn_model.frames import Stabilizer, stylize_frames  # noqa: E402
from adaattn_model.functional import calc_mean_std  # noqa: E402
from adaattn_model.images import load_image, resize_max_side  # noqa: E402
from adaattn_model.metrics import (  # noqa: E402
    frame_pairs,
    ssim,
    style_loss_from_stats,
    style_statistics,
    temporal_metrics,  # noqa: E402
)
from adaattn_model.model import FAMILIES  # noqa: E402
from adaattn_model.pipeline import StylizeOptions, decode_image, encode_content, encode_style  # noqa: E402
from adaattn_model.tools.fetch import default_models_dir  # noqa: E402
from adaattn_model.weights import load_encoder, load_model  # noqa: E402

DEFAULT_FRAMES = ROOT.parent / "shared" / "testdata" / "video" / "bbb_frames"
DEFAULT_STYLES = [ROOT / "assets" / "inputs" / n for n in
                  ("great_wave_hokusai.jpg", "starry_night_vangogh.jpg", "udnie_picabia.jpg")]  # fmt: skip


@dataclass(frozen=True)
class Mode:
    name: str
    attention: AttentionSpec | None  # None: AdaIN; its global_share is the run's
    stabilizer: Stabilizer = Stabilizer()
    detail: float = 0.0  # share of the content's fine luma detail put back


COS_SOFT = AttentionSpec("cosine_softmax", 0.03)  # lite's attention as published (no global share)
LITE = FAMILIES["lite"]  # its defaults: global share and detail step
DEFAULT = Stabilizer(temporal_smoothing=0.9, change_threshold=0.5)  # the frame node's default
MODES = [
    Mode(f"lite defaults (share {LITE.attention.global_share}, detail {LITE.detail}), per frame", LITE.attention,
         detail=LITE.detail),
    Mode("**lite defaults + temporal smoothing 0.9 (default)**", LITE.attention, DEFAULT, detail=LITE.detail),
    Mode("per-frame AdaIN", None),
    Mode("per-frame softmax AdaAttN (dot product)", AttentionSpec("softmax")),
    Mode("per-frame softmax AdaAttN (cosine logits, T=0.03; lite as published)", COS_SOFT),
    Mode("per-frame cosine AdaAttN (1+cos, the paper's video attention)", AttentionSpec("cosine")),
    Mode("lite + temporal smoothing 0.9", COS_SOFT, DEFAULT),
    Mode("lite + temporal smoothing 0.95, threshold 2", COS_SOFT, Stabilizer(temporal_smoothing=0.95, change_threshold=2.0)),
    Mode("lite + shared normalisation 0.9", COS_SOFT, Stabilizer(shared_normalization=0.9)),
    Mode("lite + smoothing 0.9 + shared normalisation 0.9", COS_SOFT,
         Stabilizer(temporal_smoothing=0.9, change_threshold=0.5, shared_normalization=0.9)),
    Mode("cosine (1+cos) + temporal smoothing 0.9", AttentionSpec("cosine"), DEFAULT),
]  # fmt: skip


def adain_frames(model, encoder, frames, style):
    """AdaIN (Huang and Belongie 2017) at relu4_1, decoded by the same decoder."""
    feats = encode_content(encoder, frames, ("relu4_1",))
    fc = feats.features["relu4_1"]
    mc, sc = calc_mean_std(fc)
    ms, ss = calc_mean_std(style.features["relu4_1"])
    return decode_image(model, {"relu4_1": (fc - mc) / sc * ss + ms}, feats)


def run(args) -> list[dict]:
    folder = args.models or default_models_dir()
    encoder = load_encoder(folder / "vgg_normalised.safetensors")
    model = load_model(folder / "adain_decoder.safetensors")
    frame_files = sorted(args.frames.glob("*.png"))
    if len(frame_files) < 6:
        raise SystemExit(f"{args.frames}: need at least 6 frames")
    inputs = torch.cat([load_image(p)[0] for p in frame_files])
    pairs = {1: frame_pairs(inputs, 1), 5: frame_pairs(inputs, 5)}
    floor = temporal_metrics(inputs, inputs, 5, pairs)
    print(f"# {len(frame_files)} frames {inputs.shape[-1]}x{inputs.shape[-2]}, styles: "
          f"{', '.join(p.stem for p in args.styles)}; input clip: warp short {1000 * floor['warping_error_short']:.3f}, "
          f"long {1000 * floor['warping_error_long']:.3f} (x1000)")  # fmt: skip
    styles = [resize_max_side(load_image(p)[0], 512) for p in args.styles]
    rows = []
    print("| mode | warp t-1 (x1000) | warp t-5 (x1000) | frame diff (x1000) | SSIM | style loss | s/frame |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in MODES:
        per_style = []
        for style in styles:
            encoded = encode_style(encoder, style, ("relu4_1",))
            start = time.perf_counter()
            if mode.attention is None:
                outputs = torch.cat([adain_frames(model, encoder, inputs[i : i + 4], encoded)
                                     for i in range(0, len(inputs), 4)])  # fmt: skip
            else:
                options = StylizeOptions(attention=mode.attention, detail=mode.detail)
                outputs = torch.cat(list(stylize_frames(model, encoder, inputs, [StyleSource(encoded)], options,
                                                        mode.stabilizer, chunk=4)))  # fmt: skip
            seconds = (time.perf_counter() - start) / len(inputs)
            outputs = outputs.clamp(0, 1)
            metrics = temporal_metrics(inputs, outputs, 5, pairs)
            style_stats = style_statistics(encoder, style)
            losses = [float(style_loss_from_stats(style_statistics(encoder, o[None]), style_stats)[0]) for o in outputs]
            metrics.update(ssim=float(ssim(outputs, inputs).mean()), style_loss=sum(losses) / len(losses),
                           seconds_per_frame=seconds)  # fmt: skip
            per_style.append(metrics)
        mean = {k: sum(m[k] for m in per_style) / len(per_style)
                for k in ("warping_error_short", "warping_error_long", "frame_difference_error", "ssim", "style_loss",
                          "seconds_per_frame")}  # fmt: skip
        rows.append({"mode": mode.name, **mean, "per_style": per_style})
        print(f"| {mode.name} | {1000 * mean['warping_error_short']:.3f} | {1000 * mean['warping_error_long']:.3f} | "
              f"{1000 * mean['frame_difference_error']:.2f} | {mean['ssim']:.3f} | {mean['style_loss']:.3f} | "
              f"{mean['seconds_per_frame']:.2f} |", flush=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, default=DEFAULT_FRAMES, help="folder of frames (PNG, in name order)")
    parser.add_argument("--styles", type=Path, nargs="+", default=DEFAULT_STYLES)
    parser.add_argument("--models", type=Path, help="models folder (default: the fetch folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not have_flow():
        raise SystemExit('warping errors need OpenCV: pip install "adaattn[metrics]"')
    torch.set_grad_enabled(False)
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
