"""Half precision against float32 on the real lite weights: how far the pictures move.

Stylises a few photo x painting pairs with the model in float32, float16 and bfloat16 (VGG and
decoder in that dtype; the attention statistics, softmax and renormalisation stay float32) and
prints the mean and max absolute difference of the 8-bit outputs against float32, in 1/255 steps.
Runs on any device (``--device cuda`` is where half precision is meant to run; on a CPU it is slow
but computes the same thing).

    python benchmarks/bench_precision.py [--size 256] [--device cpu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from adaattn_model.images import load_image, resize_max_side
from adaattn_model.models_folder import default_models_dir
from adaattn_model.pipeline import Stylizer
from adaattn_model.weights import load_encoder, load_model

INPUTS = Path(__file__).resolve().parent.parent / "assets" / "inputs"
PAIRS = [("chelsea.png", "great_wave_hokusai.jpg"), ("grace_hopper.jpg", "udnie_picabia.jpg"),
         ("rocket.jpg", "starry_night_vangogh.jpg")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="longer side of contents and styles")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", type=Path, default=None)
    args = parser.parse_args()
    folder = args.models or default_models_dir()
    device = torch.device(args.device)
    rows = []
    with torch.inference_mode():
        results = {}
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            stylizer = Stylizer(load_encoder(folder / "vgg_normalised.safetensors", device, dtype),
                                load_model(folder / "adain_decoder.safetensors", device, dtype))  # fmt: skip
            for content, style in PAIRS:
                c = resize_max_side(load_image(INPUTS / content)[0], args.size)
                s = resize_max_side(load_image(INPUTS / style)[0], args.size)
                out = stylizer.stylize(c, s).float().clamp(0, 1).cpu()
                results[dtype, content] = (out * 255).round()
        for dtype in (torch.float16, torch.bfloat16):
            diffs = torch.cat([(results[dtype, c] - results[torch.float32, c]).abs().flatten() for c, _ in PAIRS])
            rows.append((str(dtype).replace("torch.", ""), diffs.mean().item(), diffs.max().item(),
                         (diffs > 2).float().mean().item() * 100))  # fmt: skip
    print(f"lite, {len(PAIRS)} pairs at {args.size} px on {device}; 8-bit outputs against float32")
    print("| dtype | mean abs diff (/255) | max abs diff (/255) | pixels off by more than 2/255 |")
    print("|---|---:|---:|---:|")
    for name, mean, worst, share in rows:
        print(f"| {name} | {mean:.2f} | {worst:.0f} | {share:.1f}% |")


if __name__ == "__main__":
    main()
