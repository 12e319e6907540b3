"""The training loop: one process or several under torchrun (DDP), resumable bit for bit.

Defaults are the reference recipe (batch 8, Adam 2e-4, two constant epochs then x0.3 per
epoch, weights 10/3/0, a fresh sampling seed per iteration shared by the forward pass and
the local loss). The batch size is global: each of W processes takes batch / W.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..model import AdaAttNModel
from ..sampling import Sampling
from ..vgg import VGGEncoder
from ..weights import load_encoder, read_weights
from .checkpoint import CONFIG_FILE, MODEL_FILE, STATE_FILE, save_model, save_state, write_json
from .data import EpochSampler, ImageList, StyleTransferData, list_images
from .forward import check_loss_layers, stylize_train
from .losses import SIMILARITY_LAYERS, LossWeights, default_loss_layers, losses_and_output
from .report import CsvLog, plot_curves, read_log, sample_grid, save_jpeg, tensorboard_writer

TRAINABLE = ("official-image", "official-video")
SEED_LIMIT = 10**7  # iteration seeds are drawn in [0, 1e7), as the reference
AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Every setting of a run (saved as RUN_DIR/config.json)."""

    content: str
    style: str
    run_dir: str
    family: str = "official-image"
    encoder: str = ""
    init: str = ""
    steps: int = 0  # 0: ``epochs`` epochs
    epochs: int = 5
    batch_size: int = 8
    load_size: int = 512
    crop_size: int = 256
    flip: bool = True
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    adam_eps: float = 1e-8
    constant_epochs: int = 2
    lr_decay: float = 0.3
    lambda_content: float = 0.0
    lambda_global: float = 10.0
    lambda_local: float = 3.0
    lambda_similarity: float = 10000.0
    loss_layers: list[str] = field(default_factory=list)  # empty: the family's default
    similarity_layers: list[str] = field(default_factory=lambda: list(SIMILARITY_LAYERS))
    pairs: str = "shift"  # video family: "shift" or "different"
    pair_shift: int = 8
    sampling: str = "official"  # or "exact" (no subsampling)
    seed: int = 0
    save_every: int = 1000
    sample_every: int = 500
    log_every: int = 1
    workers: int = 4
    device: str = "auto"
    amp: str = "none"
    checkpoint_activations: bool = False
    quiet: bool = False

    def check(self) -> None:
        if self.family not in TRAINABLE:
            raise ValueError(f"cannot train {self.family!r}; trainable families: {', '.join(TRAINABLE)}")
        positive = ("epochs", "batch_size", "load_size", "crop_size", "save_every", "sample_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.steps < 0 or self.workers < 0 or self.pair_shift < 0 or self.constant_epochs < 0:
            raise ValueError("--steps, --workers, --pair-shift and --constant-epochs must be >= 0")
        if self.crop_size < 32:
            raise ValueError(f"--crop-size must be at least 32 (relu5_1 needs 2x2 positions), got {self.crop_size}")
        if self.crop_size > self.load_size:
            raise ValueError(f"--crop-size {self.crop_size} is larger than --load-size {self.load_size}")
        if self.family == "official-image" and self.crop_size % 16:
            raise ValueError(f"the official-image decoder needs a --crop-size divisible by 16, got {self.crop_size}")
        if not (self.lr > 0 and 0 < self.lr_decay <= 1 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("need --lr > 0, 0 < --lr-decay <= 1 and betas in [0, 1)")
        if not self.adam_eps > 0:
            raise ValueError("--adam-eps must be > 0")
        lambdas = (self.lambda_content, self.lambda_global, self.lambda_local, self.lambda_similarity)
        if min(lambdas) < 0 or not all(map(math.isfinite, lambdas)):
            raise ValueError("loss weights must be finite and >= 0")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}")
        if self.sampling not in ("official", "exact"):
            raise ValueError("--sampling must be official or exact")
        if self.pairs not in ("shift", "different"):
            raise ValueError("--pairs must be shift or different")
        if not 0 <= self.seed < 2**62:
            raise ValueError("--seed must be in [0, 2**62)")
        if self.loss_layers:
            check_loss_layers(self.loss_layers)
        check_loss_layers(self.similarity_layers, "similarity layers")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """torchrun's RANK/WORLD_SIZE/LOCAL_RANK, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, dist_info: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", dist_info.local_rank)
    return device


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Constant for ``constant_epochs`` epochs, then times ``lr_decay`` per epoch (0-based ``epoch``)."""
    return config.lr * config.lr_decay ** max(0, epoch + 1 - config.constant_epochs)


def init_reference(model: nn.Module, generator: torch.Generator) -> None:
    """The reference initialisation: every conv weight N(0, 0.02), biases 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.02)
                if module.bias is not None:
                    module.bias.zero_()


def build_model(config: TrainConfig) -> AdaAttNModel:
    model = AdaAttNModel(config.family)
    if config.init:
        kind, tensors, _ = read_weights(config.init)
        if kind != config.family:
            raise ValueError(f"--init {config.init} holds {kind} weights, but the run trains {config.family}")
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
    else:
        init_reference(model, torch.Generator().manual_seed(config.seed))
    return model


class TrainForward(nn.Module):
    """The model's training forward as a module call, so DDP can wrap it."""

    def __init__(self, model: AdaAttNModel, checkpoint_activations: bool = False) -> None:
        super().__init__()
        self.model = model
        self.checkpoint_activations = checkpoint_activations

    def forward(self, content, style, sampling: Sampling) -> Tensor:
        return stylize_train(self.model, content, style, sampling, checkpoint_activations=self.checkpoint_activations)


@dataclass
class Data:
    contents: ImageList
    styles: ImageList


def load_data(config: TrainConfig) -> Data:
    return Data(list_images(config.content, "content"), list_images(config.style, "style"))


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _amp_dtype(amp: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def train(config: TrainConfig, *, resume: dict[str, Any] | None = None, data: Data | None = None,
          log: Callable[[str], None] | None = None) -> Path:  # fmt: skip
    """Run (or continue, with ``resume`` = a loaded state) a training run; returns the model file."""
    config.check()
    log = log or (lambda message: print(message, file=sys.stderr))
    data = data or load_data(config)
    dist_info = distributed_from_env()
    if dist_info.world > 1 and not dist.is_initialized():
        backend = "nccl" if config.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    try:
        return _train(config, resume, data, dist_info, log)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, resume, data: Data, dist_info: Distributed, log) -> Path:
    run_dir = Path(config.run_dir)
    device = pick_device(config.device, dist_info)
    if config.batch_size % dist_info.world:
        raise ValueError(f"--batch-size {config.batch_size} is not divisible by the {dist_info.world} processes")
    per_rank = config.batch_size // dist_info.world
    encoder: VGGEncoder = load_encoder(config.encoder, device=device)
    channels_last = device.type == "cuda"
    if not channels_last:
        encoder = encoder.to(memory_format=torch.contiguous_format)
    model = build_model(config)
    if resume is not None:
        model.load_state_dict(resume["model"])
    model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    model.train().requires_grad_(True)
    forward: nn.Module = TrainForward(model, config.checkpoint_activations)
    if dist_info.world > 1:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2), eps=config.adam_eps
    )
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    seeds = torch.Generator().manual_seed(config.seed)
    step = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        seeds.set_state(resume["seed_generator"])
        torch.set_rng_state(resume["rng"]["cpu"])
        if device.type == "cuda" and "cuda" in resume["rng"]:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
        step = int(resume["step"])

    pair = config.pairs if config.family == "official-video" else None
    dataset = StyleTransferData(data.contents.paths, data.styles.paths, load_size=config.load_size,
                                crop_size=config.crop_size, flip=config.flip, seed=config.seed, pair=pair,
                                shift=config.pair_shift)  # fmt: skip
    per_epoch = math.ceil(len(dataset) / dist_info.world) // per_rank
    if per_epoch == 0:
        raise ValueError(f"{len(dataset)} content images are fewer than one batch of {config.batch_size}")
    total = config.steps or config.epochs * per_epoch
    weights = LossWeights(config.lambda_content, config.lambda_global, config.lambda_local, config.lambda_similarity)
    loss_layers = tuple(config.loss_layers) or default_loss_layers(model)
    amp_dtype = _amp_dtype(config.amp)

    writer = None
    csv_log = None
    if dist_info.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG_FILE, dataclasses.asdict(config))
        csv_log = CsvLog(run_dir, resume_step=step)
        writer = tensorboard_writer(run_dir)
        skipped = data.contents.skipped + data.styles.skipped
        log(f"{len(data.contents.paths)} content and {len(data.styles.paths)} style images"
            + (f" ({skipped} unreadable files skipped)" if skipped else "")
            + f"; {per_epoch} steps per epoch; training {config.family} to step {total} on {device}"
            + (f" x {dist_info.world} processes" if dist_info.world > 1 else ""))  # fmt: skip

    def checkpoint(at: int, epoch: int) -> None:
        if not dist_info.main:
            return
        meta = {"step": str(at), "epoch": str(epoch), "trained_by": "adaattn_model train"}
        save_model(run_dir / MODEL_FILE, model, config.family, meta)
        save_state(run_dir, {
            "step": at, "epoch": epoch, "family": config.family,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "seed_generator": seeds.get_state(), "rng": _rng_state(device),
        })  # fmt: skip

    bar = None
    if dist_info.main and not config.quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)
    iterator, epoch = None, -1
    last = time.perf_counter()
    try:
        while step < total:
            if step // per_epoch != epoch or iterator is None:
                epoch = step // per_epoch
                sampler = EpochSampler(len(dataset), rank=dist_info.rank, world=dist_info.world, seed=config.seed,
                                       epoch=epoch, skip=(step % per_epoch) * per_rank)  # fmt: skip
                loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=config.workers,
                                    drop_last=True, pin_memory=device.type == "cuda")  # fmt: skip
                iterator = iter(loader)
            batch = next(iterator)
            lr = learning_rate(config, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            iteration_seed = int(torch.randint(SEED_LIMIT, (1,), generator=seeds))
            memory = torch.channels_last if channels_last else torch.contiguous_format
            content, style = (batch[k].to(device, non_blocking=True).contiguous(memory_format=memory)
                              for k in ("content", "style"))  # fmt: skip
            second = batch["pair"].to(device).contiguous(memory_format=memory) if "pair" in batch else None
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                terms, output = losses_and_output(
                    forward, encoder, content, style, weights=weights,
                    seed=iteration_seed if config.sampling == "official" else None,
                    pair=second, loss_layers=loss_layers, similarity_layers=config.similarity_layers,
                )  # fmt: skip
                loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1

            values = torch.stack([t.detach().float() for t in terms.values()] + [loss.detach().float()])
            if dist_info.world > 1:
                dist.all_reduce(values)
                values /= dist_info.world
            now = time.perf_counter()
            speed = config.batch_size / max(now - last, 1e-9)
            last = now
            if not math.isfinite(float(values[-1])):
                raise FloatingPointError(f"the loss is not finite at step {step}; try a lower --lr or --amp none")
            if dist_info.main:
                row = {name: f"{float(v):.8g}" for name, v in zip((*terms, "total"), values)}
                row.update(step=step, epoch=epoch, lr=f"{lr:.6g}", seed=iteration_seed, images_per_s=f"{speed:.3g}")
                if step % config.log_every == 0 or step == total:
                    csv_log.write(row)
                if writer is not None:
                    for name, v in zip((*terms, "total"), values):
                        writer.add_scalar(f"loss/{name}", float(v), step)
                if bar is not None:
                    bar.set_postfix(
                        {k: f"{float(v):.3g}" for k, v in zip((*terms, "total"), values)} | {"img/s": f"{speed:.2f}"}
                    )
                    bar.update(1)
                if step % config.sample_every == 0 or step == total:
                    n = content.shape[0]
                    save_jpeg(
                        sample_grid(content, style, output[:n].float()), run_dir / "samples" / f"step_{step:07d}.jpg"
                    )
            if step % config.save_every == 0 or step == total:
                checkpoint(step, step // per_epoch)
    finally:
        if bar is not None:
            bar.close()
        if csv_log is not None:
            csv_log.close()
        if writer is not None:
            writer.close()
    if dist_info.main:
        plot_curves(read_log(run_dir / "log.csv"), run_dir / "loss_curves.png")
        log(f"wrote {run_dir / MODEL_FILE} and {run_dir / STATE_FILE} (step {step})")
    return run_dir / MODEL_FILE
