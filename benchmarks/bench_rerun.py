"""Seconds for a first run and for a re-run that changes a setting: what the encoding cache saves.

    python benchmarks/bench_rerun.py                 # CPU, 512x512, lite weights from the models folder
    python benchmarks/bench_rerun.py --size 1024 --device cuda

A slider change in ComfyUI or a second --alpha in a script re-runs the core with the same
images. The first run encodes content and style with VGG; a re-run that changes only what
acts after the encoder (strength, attention, temperature, sampling, masks, luminance colour)
takes both encodings from the Stylizer's cache. Each repeat starts with a fresh Stylizer
(empty cache) after one warm-up run; the table gives medians over --repeat repeats and the
ratio re-run / first run. Content and style are photos from assets/inputs, resized and
centre-cropped to --size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RERUNS = {
    "strength 0.5": {"alpha": 0.5},
    "attention softmax": {"attention": "softmax"},
    "colour luminance": {"color": "luminance"},
}


def square(path: Path, size: int):
    import torch.nn.functional as F

    from adaattn_model.images import load_image

    image = load_image(path)[0]
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    image = F.interpolate(image, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                          antialias=True, align_corners=False).clamp(0, 1)  # fmt: skip
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[..., top : top + size, left : left + size].contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", type=Path, help="folder with the lite weights (default: the models folder)")
    args = parser.parse_args()

    import torch

    from adaattn_model.models_folder import default_models_dir
    from adaattn_model.pipeline import StylizeOptions, Stylizer
    from adaattn_model.weights import load_encoder, load_model

    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    folder = args.models or default_models_dir()
    encoder = load_encoder(folder / "vgg_normalised.safetensors", device)
    model = load_model(folder / "adain_decoder.safetensors", device)
    content = square(ROOT / "assets" / "inputs" / "chelsea.png", args.size).to(device)
    style = square(ROOT / "assets" / "inputs" / "great_wave_hokusai.jpg", args.size).to(device)

    def timed(stylizer: Stylizer, options: StylizeOptions) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        stylizer.stylize(content, style, options=options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    Stylizer(encoder, model).stylize(content, style)  # warm-up
    first, again = [], {name: [] for name in RERUNS}
    for _ in range(args.repeat):
        stylizer = Stylizer(encoder, model)
        first.append(timed(stylizer, StylizeOptions()))
        for name, change in RERUNS.items():
            again[name].append(timed(stylizer, StylizeOptions(**change)))
        assert stylizer.cache.encodes == 2, "a re-run encoded again"
    print(f"# {args.size}x{args.size}, lite, {args.device}, torch {torch.__version__}, {os.cpu_count()} CPU cores, "
          f"medians of {args.repeat}")  # fmt: skip
    print("| run | seconds (median) | / first run |")
    print("|---|---:|---:|")
    base = statistics.median(first)
    print(f"| first run (encodes content and style) | {base:.2f} | 1.00 |")
    for name, times in again.items():
        t = statistics.median(times)
        print(f"| re-run, {name} | {t:.2f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
