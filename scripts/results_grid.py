"""The README's first picture: contents (rows) x styles (columns), stylised with the default model.

    python scripts/results_grid.py OUT.jpg [--models DIR] [--family lite] [--size 384]

Contents and styles are the example images in ``assets/inputs``; each is stylised with the
family's defaults (as ``python -m adaattn_model stylize`` runs it, style shrunk to 512 px) and
the grid is written atomically as a JPEG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from adaattn_model.files import atomic_output
from adaattn_model.images import load_image, resize_max_side, tensor_to_pil
from adaattn_model.models_folder import default_models_dir
from adaattn_model.pipeline import StylizeOptions, stylize
from adaattn_model.weights import ENCODER, load_encoder, load_model, scan_folder

INPUTS = Path(__file__).resolve().parent.parent / "assets" / "inputs"
CONTENTS = ("chelsea.png", "grace_hopper.jpg", "rocket.jpg")
STYLES = ("great_wave_hokusai.jpg", "starry_night_vangogh.jpg", "udnie_picabia.jpg", "woman_with_hat_matisse.jpg")
CELL = (280, 210)  # width, height of one cell; images fit inside with a margin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--family", default="lite")
    parser.add_argument("--size", type=int, default=384, help="content longer side")
    args = parser.parse_args()
    folder = args.models or default_models_dir()
    found = scan_folder(folder) if folder.is_dir() else {}
    for kind in (ENCODER, args.family):
        if kind not in found:
            raise SystemExit(f"{folder}: no {kind} weights; run 'python -m adaattn_model fetch'")
    encoder, model = load_encoder(found[ENCODER][0]), load_model(found[args.family][0])
    options = StylizeOptions(style_max_side=512)
    grid = Image.new("RGB", (CELL[0] * (len(STYLES) + 1), CELL[1] * (len(CONTENTS) + 1)), "white")

    def paste(image: torch.Tensor, column: int, row: int) -> None:
        pil = tensor_to_pil(image.clamp(0, 1))
        pil.thumbnail((CELL[0] - 8, CELL[1] - 8), Image.LANCZOS)
        grid.paste(pil, (column * CELL[0] + (CELL[0] - pil.width) // 2, row * CELL[1] + (CELL[1] - pil.height) // 2))

    styles = [load_image(INPUTS / name)[0] for name in STYLES]
    for column, style in enumerate(styles, start=1):
        paste(style, column, 0)
    with torch.inference_mode():
        for row, name in enumerate(CONTENTS, start=1):
            content = resize_max_side(load_image(INPUTS / name)[0], args.size)
            paste(content, 0, row)
            for column, style in enumerate(styles, start=1):
                paste(stylize(model, encoder, content, style, options=options), column, row)
    with atomic_output(args.output) as tmp:
        grid.save(tmp, format="JPEG", quality=88)


if __name__ == "__main__":
    main()
