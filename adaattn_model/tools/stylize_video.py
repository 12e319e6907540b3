"""The ``stylize-video`` command: a video file in, a stylised video file out, in flat memory."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

from ..frames import DEFAULT_STABILIZER
from ..video_io import DEFAULT_CRF
from .cli import add_look_arguments
from .fetch import sha256_file


def add_parser(sub) -> None:
    from ..attention import ATTENTION_KINDS
    from ..model import FAMILIES
    from ..sampling import DEFAULT_SEED, SAMPLING_MODES

    p = sub.add_parser("stylize-video", help="stylise a video file (streamed: memory does not grow with its length)")
    p.add_argument(
        "input",
        type=Path,
        metavar="IN",
        help="the video file (any format FFmpeg reads), or a folder of frames (natural name order)",
    )
    p.add_argument(
        "--fps", type=Fraction, metavar="RATE", help="frame rate of a folder of frames (e.g. 24, 30000/1001)"
    )
    p.add_argument("--style", type=Path, required=True, metavar="FILE", help="the style image")
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="output video (.mp4, .m4v, .mov, .mkv)"
    )
    g = p.add_argument_group("weights")
    g.add_argument("--models", type=Path, metavar="DIR", help="models folder (default: the fetch folder)")
    g.add_argument("--family", choices=("auto", *FAMILIES), default="auto", help="model family from the models folder")
    g.add_argument("--model", type=Path, metavar="FILE", help="model .safetensors file (with --encoder)")
    g.add_argument("--encoder", type=Path, metavar="FILE", help="VGG encoder .safetensors file")
    g = p.add_argument_group("stylisation")
    g.add_argument("--alpha", type=float, default=1.0, help="strength in [0, 1] (default 1)")
    g.add_argument("--attention", choices=ATTENTION_KINDS, help="attention variant (default: the family's)")
    g.add_argument("--temperature", type=float, help="temperature of softmax attention (default: the family's)")
    g.add_argument("--sampling", choices=SAMPLING_MODES, default="exact", help="exact (default) or official")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of official sampling (default {DEFAULT_SEED})")
    g.add_argument("--style-max-side", type=int, default=512, help="shrink the style to this longer side (default 512)")
    add_look_arguments(g)
    g = p.add_argument_group("temporal stabilisers")
    d = DEFAULT_STABILIZER
    g.add_argument("--temporal-smoothing", type=float, default=d.temporal_smoothing,
                   help=f"lean static areas towards the previous frame's statistics (default {d.temporal_smoothing}, "
                        "0: off)")  # fmt: skip
    g.add_argument(
        "--change-threshold",
        type=float,
        default=d.change_threshold,
        help=f"how much an area may change and count as static (default {d.change_threshold})",
    )
    g.add_argument(
        "--shared-normalization",
        type=float,
        default=d.shared_normalization,
        help="momentum of content statistics shared over frames (default 0: off)",
    )
    g.add_argument("--cut-threshold", type=float, default=d.cut_threshold,
                   help=f"scene-cut detection: reset the stabilisers where the content changes this much "
                        f"(default {d.cut_threshold}; 0: off)")  # fmt: skip
    g = p.add_argument_group("sizes and running")
    g.add_argument("--max-side", type=int, default=0, help="shrink frames to this longer side (0: keep size)")
    g.add_argument("--chunk", type=int, default=4, help="frames stylised together (default 4)")
    g.add_argument("--segment", type=int, default=240, metavar="K",
                   help="frames per resumable segment (default 240)")  # fmt: skip
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run of the same job; keep its progress if this run stops",
    )
    g.add_argument(
        "--crf", type=int, default=DEFAULT_CRF, help=f"H.264 quality, lower is better (default {DEFAULT_CRF})"
    )
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    g.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="weights/activations dtype (auto: float16 on CUDA, float32 elsewhere)")
    g.add_argument("--memory-budget", type=int, metavar="MB", help="attention workspace")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _input_signature(path: Path) -> list:
    """What identifies the input for --resume: path, sizes and modification times (of each frame, for a folder)."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [str(path.resolve())] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def run_stylize_video(args) -> int:
    import torch

    from ..frames import Stabilizer
    from ..images import check_image_file, load_image
    from ..pipeline import StylizeOptions, style_sources
    from ..sampling import Sampling
    from ..video_io import VideoError, container_format, open_reader, require_av
    from ..video_stream import stylize_video
    from ..weights import load_encoder, load_model
    from .progress_bar import EngineBar
    from .stylize import resolve_device, resolve_dtype, resolve_weights

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.max_side < 0 or args.style_max_side < 0 or args.chunk < 1 or args.segment < 1 or not 0 <= args.crf <= 51:
        raise ValueError("--max-side and --style-max-side must be >= 0, --chunk and --segment >= 1, --crf in [0, 51]")
    require_av()
    container_format(args.output)
    if not args.input.exists():
        raise VideoError(f"{args.input}: no such file or folder")
    if args.fps is not None and args.fps <= 0:
        raise ValueError("--fps must be > 0")
    if args.output.resolve() == args.input.resolve():
        raise VideoError(f"{args.output}: the output would overwrite the input")
    check_image_file(args.style)
    open_reader(args.input, frame_rate=args.fps).close()  # a bad input fails before the weights load
    stabilizer = Stabilizer(args.temporal_smoothing, args.change_threshold, args.shared_normalization,
                            args.cut_threshold)  # fmt: skip
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    encoder_path, model_path = resolve_weights(args)
    encoder = load_encoder(encoder_path, device, dtype)
    model = load_model(model_path, device, dtype)
    options = StylizeOptions(  # the attention by the one rule of resolve_attention, as in stylize
        alpha=args.alpha,
        attention=args.attention,
        temperature=args.temperature,
        sampling=Sampling(args.sampling, args.seed),
        budget_bytes=args.memory_budget * 2**20 if args.memory_budget else None,
        style_max_side=args.style_max_side,
        global_share=args.global_share,
        detail=args.detail,
    )
    job = {"input": _input_signature(args.input), "style": sha256_file(args.style),
           "style_max_side": args.style_max_side, "model": sha256_file(model_path), "dtype": args.dtype}  # fmt: skip
    if not args.quiet:
        print(f"model: {model.family.name} ({model_path.name}) on {device}", file=sys.stderr)
    bar = EngineBar(args.quiet)
    with torch.inference_mode():
        sources = style_sources(model, encoder, load_image(args.style)[0], options, progress=bar.progress)
        result = stylize_video(model, encoder, args.input, args.output, sources, options, stabilizer,
                               chunk=args.chunk, segment_frames=args.segment, max_side=args.max_side, crf=args.crf,
                               frame_rate=args.fps, resume=args.resume, job=job, progress=bar.progress)  # fmt: skip
    bar.close()
    if not args.quiet:
        resumed = f", {result.resumed_from} from the earlier run" if result.resumed_from else ""
        print(f"wrote {result.output}: {result.frames} frames {result.width}x{result.height}{resumed}, "
              f"audio {result.audio}", file=sys.stderr)  # fmt: skip
    return 0

