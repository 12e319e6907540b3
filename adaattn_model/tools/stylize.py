"""The ``stylize`` command: files or folders in, image files out."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..encoding_cache import DEFAULT_CACHE_BYTES
from ..images import IMAGE_SUFFIXES, ImageError, check_image_file, load_image, resize_max_side, save_image
from ..models_folder import default_models_dir, pick_family
from ..pipeline import Style, StylizeOptions, Stylizer
from ..sampling import Sampling
from ..sorting import natural_key
from ..weights import ENCODER, WeightsError, load_encoder, load_model, scan_folder
from .progress_bar import EngineBar


def expand_images(paths: Sequence[str], what: str) -> list[Path]:
    """Image files from files and folders (folders: their images, sorted by name)."""
    out: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = sorted(
                (p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                key=lambda p: natural_key(p.name),
            )
            if not found:
                raise ImageError(f"{item}: no images in this folder")
            out += found
        elif item.is_file():
            out.append(item)
        else:
            raise ImageError(f"{item}: no such file or folder")
    for p in out:
        check_image_file(p)  # every input is checked before any work starts
    if not out:
        raise ImageError(f"no {what} images given")
    return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA, float32 elsewhere (on the CPU half precision is slower, not faster).
    float16 rather than bfloat16: on the lite weights its 8-bit outputs stay within 0.09/255 of float32 on
    average, bfloat16's move 0.77/255 (``benchmarks/bench_precision.py``). Other names as given. The
    attention statistics, softmax and renormalisation stay float32 whatever this is."""
    if name != "auto":
        return getattr(torch, name)
    return torch.float16 if device.type == "cuda" else torch.float32


def resolve_weights(args) -> tuple[Path, Path]:
    """(encoder file, model file) from --encoder/--model or the models folder.

    A folder without a usable model gets the lite weights downloaded on first use
    (unless --no-fetch or $ADAATTN_NO_FETCH), when the family asked for is auto or lite.
    """
    from .fetch import first_use_fetch

    if args.model or args.encoder:
        if not (args.model and args.encoder):
            raise WeightsError("--model and --encoder go together (or use --models DIR)")
        return args.encoder, args.model
    folder = args.models or default_models_dir()
    found = scan_folder(folder) if folder.is_dir() else {}
    usable = ENCODER in found and pick_family(found, args.family) is not None
    if not usable and args.family in ("auto", "lite"):
        no_fetch = getattr(args, "no_fetch", False)
        if first_use_fetch(folder, no_fetch=no_fetch, quiet=getattr(args, "quiet", False)):
            found = scan_folder(folder)
    if not folder.is_dir():
        raise WeightsError(f"{folder}: models folder not found; run 'python -m adaattn_model fetch' first")
    if ENCODER not in found:
        raise WeightsError(f"{folder}: no VGG encoder weights; run 'python -m adaattn_model fetch'")
    family = pick_family(found, args.family)
    if family is not None:
        return found[ENCODER][0], found[family][0]
    wanted = "model" if args.family == "auto" else f"{args.family} model"
    raise WeightsError(f"{folder}: no {wanted} weights; run 'python -m adaattn_model fetch' or convert them")


@dataclass(frozen=True)
class Job:
    content: Path
    styles: tuple[Path, ...]
    output: Path


def plan_jobs(args, contents: list[Path], styles: list[Path]) -> list[Job]:
    blend = args.blend is not None
    if args.style_weights is not None and len(args.style_weights) != len(styles):
        raise ValueError(f"{len(args.style_weights)} style weights for {len(styles)} styles")
    if args.style_weights is not None and not blend:
        raise ValueError("--style-weights needs --blend mix or --blend match")
    pairs = [(c, tuple(styles)) for c in contents] if blend else [(c, (s,)) for c in contents for s in styles]
    out = args.output
    if len(pairs) == 1 and not out.is_dir():
        if out.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImageError(f"{out}: output file needs an image suffix ({', '.join(IMAGE_SUFFIXES)})")
        return [Job(pairs[0][0], pairs[0][1], out)]
    if out.exists() and not out.is_dir():
        raise ImageError(f"{out}: several results need an output folder, and this is a file")
    jobs = []
    for content, group in pairs:
        tag = "blend" if blend else group[0].stem
        jobs.append(Job(content, group, out / f"{content.stem}__{tag}.{args.format}"))
    names = [j.output for j in jobs]
    if len(set(names)) != len(names):
        raise ImageError("two inputs have the same file name, so their results would collide; rename one")
    return jobs


def run_stylize(args) -> int:
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.max_side < 0 or args.style_max_side < 0 or (args.memory_budget is not None and args.memory_budget <= 0):
        raise ValueError("--max-side and --style-max-side must be >= 0 and --memory-budget > 0")
    contents = expand_images(args.content, "content")
    styles = expand_images(args.style, "style")
    jobs = plan_jobs(args, contents, styles)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    options = StylizeOptions(
        alpha=args.alpha,
        attention=args.attention,
        temperature=args.temperature,
        sampling=Sampling(args.sampling, args.seed),
        blend=args.blend or "mix",
        budget_bytes=args.memory_budget * 2**20 if args.memory_budget else None,
        color=args.preserve_color,
        style_max_side=args.style_max_side,
        global_share=args.global_share,
        detail=args.detail,
        tile_size=args.tile_size,
        memory_limit_bytes=args.memory_limit * 2**20 if args.memory_limit is not None else None,
    )
    encoder_path, model_path = resolve_weights(args)
    # Encodings are kept for the jobs that reuse them (a style for every content, a content for every style);
    # a single job keeps none, so its content's keys and its style's banks are freed before decoding.
    cache_bytes = DEFAULT_CACHE_BYTES if len(jobs) > 1 else 0
    stylizer = Stylizer(load_encoder(encoder_path, device, dtype), load_model(model_path, device, dtype), cache_bytes)
    weights = args.style_weights or [1.0] * len(styles)
    if not args.quiet:
        print(f"model: {stylizer.model.family.name} ({model_path.name}) on {device}", file=sys.stderr)
    bar = EngineBar(args.quiet)
    loaded: dict[Path, torch.Tensor] = {}  # each style file read once; its encoding is cached by the core
    with torch.inference_mode():
        for index, job in enumerate(jobs, 1):
            content, alpha = load_image(job.content)
            content = resize_max_side(content, args.max_side)
            if alpha is not None:
                alpha = resize_max_side(alpha[None], args.max_side)[0]
            for path in job.styles:
                if path not in loaded:
                    loaded[path] = load_image(path)[0]
            group = [Style(loaded[path], w) for path, w in zip(job.styles, weights if len(job.styles) > 1 else [1.0])]
            if len(jobs) > 1:
                bar.describe(f"image {index}/{len(jobs)}")
            result = stylizer.stylize(content, group, options=options, output_device="cpu", progress=bar.progress)
            save_image(result.clamp(0, 1), job.output, alpha)
    bar.close()
    if not args.quiet:
        where = jobs[0].output if len(jobs) == 1 else jobs[0].output.parent
        print(f"wrote {len(jobs)} image(s) to {where}", file=sys.stderr)
    return 0

