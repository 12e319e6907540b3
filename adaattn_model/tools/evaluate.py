"""The ``eval`` command: quality metrics over folders, as a table and a JSON file.

Two modes:

* images: ``--content DIR --style DIR --results DIR``. Results are matched to their
  content and style by the names ``stylize`` writes (``<content>__<style>.<ext>``).
  Per image: SSIM to the content, content loss, style loss.
* frames: ``--frames DIR --results DIR [--style FILE]``. Frames and stylised frames pair
  up in name order. Short- and long-range warping error (needs OpenCV), frame-difference
  error, mean SSIM to the input frames, and the style loss when a style is given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..files import atomic_output
from ..images import IMAGE_SUFFIXES, ImageError, load_image, resize_max_side
from ..metrics import (
    content_loss,
    ssim,
    style_loss_from_stats,
    style_statistics,
    temporal_metrics,
)
from ..sorting import natural_key
from ..vgg import VGGEncoder


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder")
    found = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: natural_key(p.name),
    )
    if not found:
        raise ImageError(f"{folder}: no images in this folder")
    return found


def rgb(path: Path) -> torch.Tensor:
    return load_image(path)[0]


def evaluate_images(encoder: VGGEncoder, content_dir: Path, style_dir: Path, results_dir: Path,
                    style_max_side: int = 512) -> dict:  # fmt: skip
    contents = {p.stem: p for p in images_in(content_dir)}
    styles = {p.stem: p for p in images_in(style_dir)}
    rows, style_cache = [], {}
    for result_path in images_in(results_dir):
        content_name, sep, style_name = result_path.stem.partition("__")
        if not sep or content_name not in contents or style_name not in styles:
            continue  # not a result of these inputs (blends and unrelated files are skipped)
        result, content = rgb(result_path), rgb(contents[content_name])
        if content.shape != result.shape:
            content = torch.nn.functional.interpolate(content, size=result.shape[-2:], mode="bicubic", antialias=True)
        if style_name not in style_cache:
            style = resize_max_side(rgb(styles[style_name]), style_max_side)
            style_cache[style_name] = style_statistics(encoder, style)
        rows.append({
            "result": result_path.name,
            "ssim": float(ssim(result, content.clamp(0, 1))[0]),
            "content_loss": float(content_loss(encoder, result, content)[0]),
            "style_loss": float(style_loss_from_stats(style_statistics(encoder, result), style_cache[style_name])[0]),
        })  # fmt: skip
    if not rows:
        raise ImageError(f"{results_dir}: no results named <content>__<style> for these contents and styles")
    means = {k: sum(r[k] for r in rows) / len(rows) for k in ("ssim", "content_loss", "style_loss")}
    return {"mode": "images", "count": len(rows), "mean": means, "images": rows}


def evaluate_frames(encoder: VGGEncoder, frames_dir: Path, results_dir: Path, style_path: Path | None = None,
                    long_gap: int = 5, style_max_side: int = 512) -> dict:  # fmt: skip
    frame_paths, result_paths = images_in(frames_dir), images_in(results_dir)
    if len(frame_paths) != len(result_paths) or len(frame_paths) < 2:
        raise ImageError(
            f"{len(frame_paths)} frames and {len(result_paths)} stylised frames: they must pair up, at least 2 of each"
        )
    inputs = torch.cat([rgb(p) for p in frame_paths])
    outputs = torch.cat([rgb(p) for p in result_paths])
    if inputs.shape != outputs.shape:
        raise ImageError("stylised frames must have the size of the input frames")
    report = {"mode": "frames", "frames": len(frame_paths)}
    report.update(temporal_metrics(inputs, outputs, long_gap))
    report["ssim"] = float(ssim(outputs, inputs).mean())
    if style_path is not None:
        style = style_statistics(encoder, resize_max_side(rgb(style_path), style_max_side))
        losses = [float(style_loss_from_stats(style_statistics(encoder, o[None]), style)[0]) for o in outputs]
        report["style_loss"] = sum(losses) / len(losses)
    return report


def print_table(report: dict, file=None) -> None:
    file = file or sys.stdout
    if report["mode"] == "images":
        print("| result | SSIM | content loss | style loss |", file=file)
        print("|---|---:|---:|---:|", file=file)
        for r in report["images"]:
            print(f"| {r['result']} | {r['ssim']:.3f} | {r['content_loss']:.3f} | {r['style_loss']:.3f} |", file=file)
        m = report["mean"]
        print(f"| mean of {report['count']} | {m['ssim']:.3f} | {m['content_loss']:.3f} | {m['style_loss']:.3f} |",
              file=file)  # fmt: skip
        return
    print("| metric | value |", file=file)
    print("|---|---:|", file=file)
    for key, value in report.items():
        if key != "mode":
            shown = f"{value:.5f}" if isinstance(value, float) else str(value)
            print(f"| {key} | {shown} |", file=file)


def write_json(report: dict, path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
