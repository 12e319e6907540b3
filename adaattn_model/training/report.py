"""What a run shows as it goes: a CSV log, sample grids, TensorBoard when installed, loss curves."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..files import atomic_output
from ..images import tensor_to_pil

LOG_FILE = "log.csv"
LOG_FIELDS = ("step", "epoch", "lr", "seed", "content", "global", "local", "similarity", "total", "images_per_s")
CURVE_COLOURS = {"total": (0, 0, 0), "global": (214, 39, 40), "local": (31, 119, 180),
                 "content": (44, 160, 44), "similarity": (148, 103, 189)}  # fmt: skip


class CsvLog:
    """Appends one row per step to ``RUN_DIR/log.csv``; on resume, rows after ``resume_step`` are dropped."""

    def __init__(self, run_dir: Path, resume_step: int = 0) -> None:
        self.path = run_dir / LOG_FILE
        rows = read_log(self.path) if resume_step and self.path.is_file() else []
        rows = [r for r in rows if int(r["step"]) <= resume_step]
        with atomic_output(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self.writer = csv.DictWriter(self.file, LOG_FIELDS)

    def write(self, row: Mapping[str, object]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sample_grid(content: Tensor, style: Tensor, output: Tensor, rows: int = 4) -> Image.Image:
    """Rows of (content, style, output) for the first ``rows`` batch elements."""
    n = min(rows, content.shape[0])
    images = torch.stack([torch.stack([content[i], style[i], output[i]]) for i in range(n)])
    images = images.detach().float().cpu().clamp(0, 1)
    _, _, _, h, w = images.shape
    grid = torch.ones(3, n * h + (n - 1) * 2, 3 * w + 4)
    for r in range(n):
        for c in range(3):
            grid[:, r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = images[r, c]
    return tensor_to_pil(grid[None])


def save_jpeg(image: Image.Image, path: Path, quality: int = 90) -> None:
    with atomic_output(path) as tmp:
        image.save(tmp, format="JPEG", quality=quality)


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter when TensorBoard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_curves(rows: Sequence[Mapping[str, str]], path: Path, size: tuple[int, int] = (720, 420)) -> None:
    """Loss curves (moving average, log scale) of a run's CSV rows as a PNG, drawn with Pillow."""
    if not rows:
        return
    width, height = size
    left, right, top, bottom = 70, 130, 20, 40
    steps = [int(r["step"]) for r in rows]
    series = {}
    for name in CURVE_COLOURS:
        vals = [float(r[name]) for r in rows if r.get(name) not in ("", None)]
        if len(vals) == len(rows) and any(v > 0 for v in vals):
            series[name] = _smooth(vals, max(1, len(vals) // 50))
    positives = [v for s in series.values() for v in s if v > 0]
    if not positives:
        return
    lo, hi = math.log10(min(positives)), math.log10(max(positives))
    lo, hi = math.floor(lo), math.ceil(hi) if hi > lo else math.floor(lo) + 1
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    x0, x1, y0, y1 = left, width - right, height - bottom, top
    span = max(1, steps[-1] - steps[0])

    def xy(step: int, value: float) -> tuple[float, float]:
        fx = (step - steps[0]) / span
        fy = (math.log10(max(value, 10.0**lo)) - lo) / (hi - lo)
        return x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)

    for decade in range(lo, hi + 1):
        y = xy(steps[0], 10.0**decade)[1]
        draw.line([x0, y, x1, y], fill=(220, 220, 220))
        draw.text((8, y - 6), f"1e{decade}", fill=(0, 0, 0))
    draw.rectangle([x0, y1, x1, y0], outline=(0, 0, 0))
    for frac in (0, 0.5, 1):
        step = steps[0] + frac * span
        draw.text((x0 + frac * (x1 - x0) - 10, y0 + 8), f"{int(step)}", fill=(0, 0, 0))
    draw.text(((x0 + x1) // 2 - 15, y0 + 22), "step", fill=(0, 0, 0))
    for k, (name, values) in enumerate(series.items()):
        colour = CURVE_COLOURS[name]
        draw.line([xy(s, v) for s, v in zip(steps, values)], fill=colour, width=2)
        draw.line([x1 + 10, y1 + 12 + 18 * k, x1 + 30, y1 + 12 + 18 * k], fill=colour, width=3)
        draw.text((x1 + 36, y1 + 6 + 18 * k), name, fill=(0, 0, 0))
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")
