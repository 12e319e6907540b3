"""``python -m adaattn_model train``: train official-image or official-video with the paper's losses.

Defaults are the reference recipe. Several GPUs: ``torchrun --nproc_per_node N -m adaattn_model
train ...`` (the batch size stays global). Needs torchvision (``pip install 'adaattn[train]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Settings a resumed run may change; every other one comes from RUN_DIR/config.json.
RESUME_OVERRIDES = ("steps", "device", "workers", "save_every", "sample_every", "log_every", "quiet")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..training.loop import AMP_MODES, TRAINABLE, TrainConfig

    d = TrainConfig("", "", "")
    p.add_argument("--content", type=Path, metavar="DIR", help="content images (searched recursively)")
    p.add_argument("--style", type=Path, metavar="DIR", help="style images (searched recursively)")
    p.add_argument("-o", "--output", type=Path, metavar="RUN_DIR", help="run folder: weights, state, log, samples")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR (its settings)")
    p.add_argument("--family", choices=TRAINABLE, default=d.family, help=f"model to train (default {d.family})")
    p.add_argument("--encoder", type=Path, metavar="FILE", help="VGG encoder .safetensors (default: models folder)")
    p.add_argument("--init", type=Path, metavar="FILE",
                   help="fine-tune from these weights (default: from scratch, conv weights N(0, 0.02))")  # fmt: skip
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=int, default=d.steps, help="iterations (default 0: --epochs epochs)")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs over the contents (default {d.epochs})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"global batch (default {d.batch_size})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    g.add_argument("--beta1", type=float, default=d.beta1, help=f"Adam beta1 (default {d.beta1})")
    g.add_argument("--beta2", type=float, default=d.beta2, help=f"Adam beta2 (default {d.beta2})")
    g.add_argument("--adam-eps", type=float, default=d.adam_eps, help=f"Adam epsilon (default {d.adam_eps})")
    g.add_argument("--constant-epochs", type=int, default=d.constant_epochs,
                   help=f"epochs at the full rate before the decay (default {d.constant_epochs})")  # fmt: skip
    g.add_argument("--lr-decay", type=float, default=d.lr_decay, help=f"rate factor per later epoch ({d.lr_decay})")
    g = p.add_argument_group("data")
    g.add_argument("--load-size", type=int, default=d.load_size, help=f"resize side, bicubic (default {d.load_size})")
    g.add_argument("--crop-size", type=int, default=d.crop_size, help=f"random crop side (default {d.crop_size})")
    g.add_argument("--no-flip", dest="flip", action="store_false", help="no random horizontal flip")
    g.add_argument("--workers", type=int, default=d.workers, help=f"data loading processes (default {d.workers})")
    g.add_argument("--pairs", choices=("shift", "different"), default=d.pairs,
                   help="video family: a shifted second crop of each content, or a second content image")  # fmt: skip
    g.add_argument("--pair-shift", type=int, default=d.pair_shift, help=f"max shift in pixels ({d.pair_shift})")
    g = p.add_argument_group("losses")
    g.add_argument("--lambda-content", type=float, default=d.lambda_content, help=f"({d.lambda_content})")
    g.add_argument("--lambda-global", type=float, default=d.lambda_global, help=f"({d.lambda_global})")
    g.add_argument("--lambda-local", type=float, default=d.lambda_local, help=f"({d.lambda_local})")
    g.add_argument("--lambda-similarity", type=float, default=d.lambda_similarity,
                   help=f"video family's cross-image similarity loss ({d.lambda_similarity})")  # fmt: skip
    g.add_argument("--loss-layers", type=lambda s: s.split(","), default=None, metavar="L1,L2",
                   help="layers of the image losses (default: relu2_1..relu5_1; video: relu2_1,relu3_1)")  # fmt: skip
    g.add_argument("--similarity-layers", type=lambda s: s.split(","), default=d.similarity_layers,
                   metavar="L1,L2", help="layers of the similarity loss (default relu3_1,relu4_1,relu5_1)")  # fmt: skip
    g.add_argument("--sampling", choices=("official", "exact"), default=d.sampling,
                   help="official: the reference's random style subsets, a fresh seed per step (default)")  # fmt: skip
    g.add_argument("--seed", type=int, default=d.seed, help="seed of init, data order, crops and sampling seeds")
    g = p.add_argument_group("running and output")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--amp", choices=AMP_MODES, default=d.amp, help="mixed precision (fp16 uses a grad scaler)")
    g.add_argument("--checkpoint-activations", action="store_true", help="recompute activations in backward")
    g.add_argument("--save-every", type=int, default=d.save_every, help=f"checkpoint period ({d.save_every})")
    g.add_argument("--sample-every", type=int, default=d.sample_every, help=f"sample grid period ({d.sample_every})")
    g.add_argument("--log-every", type=int, default=d.log_every, help=f"CSV row period ({d.log_every})")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _default_encoder() -> Path:
    from ..models_folder import default_models_dir
    from ..weights import ENCODER, WeightsError, scan_folder

    folder = default_models_dir()
    found = scan_folder(folder).get(ENCODER) if folder.is_dir() else None
    if not found:
        raise WeightsError(f"{folder}: no VGG encoder weights; run 'python -m adaattn_model fetch' or give --encoder")
    return found[0]


def config_from_args(args: argparse.Namespace, parser_defaults: dict | None = None):
    from ..training.checkpoint import read_config
    from ..training.loop import TrainConfig

    if args.resume is not None:
        stored = read_config(args.resume)
        stored["run_dir"] = str(args.resume)
        for name in RESUME_OVERRIDES:
            value = getattr(args, name)
            if parser_defaults is None or value != parser_defaults.get(name):
                stored[name] = value
        return TrainConfig(**stored)
    missing = [flag for flag, value in (("--content", args.content), ("--style", args.style), ("-o", args.output))
               if value is None]  # fmt: skip
    if missing:
        raise ValueError(f"give {', '.join(missing)} (or --resume RUN_DIR)")
    return TrainConfig(
        content=str(args.content), style=str(args.style), run_dir=str(args.output), family=args.family,
        encoder=str(args.encoder or _default_encoder()), init=str(args.init or ""), steps=args.steps,
        epochs=args.epochs, batch_size=args.batch_size, load_size=args.load_size, crop_size=args.crop_size,
        flip=args.flip, lr=args.lr, beta1=args.beta1, beta2=args.beta2, adam_eps=args.adam_eps, constant_epochs=args.constant_epochs,
        lr_decay=args.lr_decay, lambda_content=args.lambda_content, lambda_global=args.lambda_global,
        lambda_local=args.lambda_local, lambda_similarity=args.lambda_similarity,
        loss_layers=list(args.loss_layers or []), similarity_layers=list(args.similarity_layers),
        pairs=args.pairs, pair_shift=args.pair_shift, sampling=args.sampling, seed=args.seed,
        save_every=args.save_every, sample_every=args.sample_every, log_every=args.log_every,
        workers=args.workers, device=args.device, amp=args.amp,
        checkpoint_activations=args.checkpoint_activations, quiet=args.quiet,
    )  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    """Check everything that can be checked before a file is written, then train."""
    try:
        from ..training.data import require_torchvision

        require_torchvision()
    except ImportError as error:
        raise ValueError(str(error)) from None
    from ..training.checkpoint import STATE_FILE, load_state
    from ..training.loop import load_data, train

    defaults = vars(_defaults())
    config = config_from_args(args, defaults)
    config.check()
    resume = None
    if args.resume is not None:
        resume = load_state(args.resume)
        if resume.get("family") != config.family:
            raise ValueError(f"{args.resume}: the state is for {resume.get('family')}, the config for {config.family}")
    elif (Path(config.run_dir) / STATE_FILE).exists():
        raise ValueError(f"{config.run_dir} already holds a run; continue it with --resume {config.run_dir}")
    if not Path(config.encoder).is_file():
        raise ValueError(f"encoder {config.encoder}: no such file")
    if config.init and not Path(config.init).is_file():
        raise ValueError(f"--init {config.init}: no such file")
    data = load_data(config)
    train(config, resume=resume, data=data)
    return 0


def _defaults() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])
