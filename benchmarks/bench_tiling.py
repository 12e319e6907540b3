"""Whole-command time and peak memory of large stylisations, untiled and tiled.

Each case runs ``python -m adaattn_model stylize`` as its own process (lite weights from
the models folder, exact sampling, a 512-pixel style) on a photo upscaled to the size, and
reads the process's peak resident memory from the kernel (``wait4``). Prints a table with
the time per megapixel relative to the untiled 1024x1024 run.

    python benchmarks/bench_tiling.py                       # 1024 (untiled), 4096 and 8K (auto tiling)
    python benchmarks/bench_tiling.py --sizes 1024 2048x2048 --tile-size 1024
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "assets" / "inputs"


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h or w)


def run(cmd: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (GiB) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1024", "4096", "7680x4320"], help="WxH or N (square)")
    parser.add_argument("--tile-size", type=int, help="force this tile size (default: the automatic choice)")
    parser.add_argument("--content", type=Path, default=INPUTS / "chelsea.png")
    parser.add_argument("--style", type=Path, default=INPUTS / "great_wave_hokusai.jpg")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = Image.open(args.content).convert("RGB")
        for text in args.sizes:
            w, h = parse_size(text)
            src = Path(tmp) / f"content_{w}x{h}.png"
            photo.resize((w, h), Image.BICUBIC).save(src)
            cmd = [sys.executable, "-m", "adaattn_model", "stylize", "--content", str(src), "--style", str(args.style),
                   "-o", str(Path(tmp) / f"out_{w}x{h}.png"), "--quiet", "--family", "lite", "--no-fetch"]  # fmt: skip
            if args.tile_size is not None and w * h > 1024 * 1024:
                cmd += ["--tile-size", str(args.tile_size)]
            seconds, peak = run(cmd)
            rows.append((w, h, seconds, peak))
            print(f"{w}x{h}: {seconds:.1f} s, peak {peak:.2f} GiB", file=sys.stderr, flush=True)
    base = rows[0][2] / (rows[0][0] * rows[0][1] / 1e6)
    print("| size | megapixels | seconds | s / MP | vs first | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for w, h, seconds, peak in rows:
        mp = w * h / 1e6
        print(f"| {w}x{h} | {mp:.1f} | {seconds:.1f} | {seconds / mp:.2f} | {seconds / mp / base:.2f}x | {peak:.2f} GiB |")


if __name__ == "__main__":
    main()
