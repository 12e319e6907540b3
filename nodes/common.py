"""Widgets and helpers shared by the node families."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..adaattn_model.attention import ATTENTION_KINDS, AttentionSpec, budget_for, resolve_attention
from ..adaattn_model.model import Family
from ..adaattn_model.progress import Progress, forecast, release
from ..adaattn_model.sampling import DEFAULT_SEED, SAMPLING_MODES, Sampling
from . import host
from .bundles import MODEL_TYPE

log = logging.getLogger("adaattn")

MODEL_INPUT = (MODEL_TYPE, {"tooltip": "The AdaAttN model (encoder + family model) from Load AdaAttN Model."})
ATTENTION_INPUT = (
    ["auto", *ATTENTION_KINDS],
    {
        "default": "auto",
        "tooltip": "auto: the model's own (softmax for the image model, cosine for the video model, "
        "cosine_softmax for lite). softmax: dot-product softmax. cosine: the video model's normalised "
        "1+cos weights (steadier across frames). cosine_softmax: softmax of cosine / temperature.",
    },
)
TEMPERATURE_INPUT = (
    "FLOAT",
    {
        "default": 0.0, "min": 0.0, "max": 10.0, "step": 0.005, "advanced": True,
        "tooltip": "Divides the softmax logits; 0 = the variant's default (1 for softmax, 0.03 for "
        "cosine_softmax). Lower = more local, patch-like matching; higher = closer to AdaIN.",
    },
)  # fmt: skip
SAMPLING_INPUT = (
    list(SAMPLING_MODES),
    {"default": "exact", "advanced": True, "tooltip": "exact: every style position. official: the authors' random "
     "subset (4096 at relu3_1, 65536 deeper), reproducible with the seed."},
)  # fmt: skip
SEED_INPUT = (
    "INT",
    {"default": DEFAULT_SEED, "min": 0, "max": 2**53 - 1, "advanced": True,
     "tooltip": "Seed of official sampling (the authors used 6666). No effect in exact mode."},
)  # fmt: skip
STRENGTH_INPUT = (
    "FLOAT",
    {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
     "tooltip": "How much of the stylised feature replaces the incoming one (alpha)."},
)  # fmt: skip
STYLE_MAX_SIDE_INPUT = (
    "INT",
    {"default": 512, "min": 0, "max": 8192, "step": 16,
     "tooltip": "Shrink the style so its longer side is at most this (0 = keep). It sets the "
     "scale of the brush strokes; the authors' models saw 512."},
)  # fmt: skip

# How far the attended statistics move to the whole style's, and how much of the content's fine
# detail comes back: optional widgets (saved workflows without them keep loading), -1 = the model's own.
MODEL_DEFAULT = -1.0


def share_input(tooltip: str) -> tuple:
    """A 0..1 share widget whose -1 setting means the model's own."""
    return ("FLOAT", {"default": MODEL_DEFAULT, "min": MODEL_DEFAULT, "max": 1.0, "step": 0.05, "advanced": True,
                      "tooltip": tooltip})  # fmt: skip


GLOBAL_SHARE_INPUT = share_input(
    "How far each position's attended style statistics move to the whole style's (0 = AdaAttN as published, "
    "1 = AdaIN). -1 = the model's own: 0.7 for lite, 0 for the authors' models."
)
DETAIL_INPUT = share_input(
    "Share of the content's fine luma detail put back after decoding (faces, edges, lettering stay crisp; "
    "0 = none). -1 = the model's own: 0.6 for lite, 0 for the authors' models."
)


def model_default(value: float) -> float | None:
    """A share widget's value for the core: None (the model's own) for the -1 setting."""
    return None if value < 0 else float(value)


# The attention widgets, in the order every node shows them.
ATTENTION_INPUTS = {
    "attention": ATTENTION_INPUT,
    "temperature": TEMPERATURE_INPUT,
    "sampling": SAMPLING_INPUT,
    "sample_seed": SEED_INPUT,
}


def attention_spec(family: Family, name: str, temperature: float, global_share: float = MODEL_DEFAULT) -> AttentionSpec:
    """The attention widgets' choice for ``family`` ("auto", temperature 0 and share -1: the defaults), by the
    engine's rule."""
    return resolve_attention(family.attention, name, temperature, model_default(global_share))


def make_sampling(mode: str, seed: int) -> Sampling:
    return Sampling(mode, int(seed))


def attention_budget(device: torch.device) -> int:
    """Bytes for one attention workspace, from the free memory ComfyUI reports."""
    return budget_for(device, host.free_memory(device) if device.type == "cuda" else None)


def activation_bytes(height: int, width: int, batch: int = 1) -> int:
    """Rough peak of encoder/decoder activations: a few 64-channel float32 maps at full size."""
    return 6 * 64 * 4 * height * width * batch


def run_in_chunks(
    total: int, chunk: int, step: Callable[[int, int], None], *, progress: Progress | None = None
) -> None:
    """Call ``step(start, stop)`` over ``range(total)`` in chunks, with progress and interrupts.

    On out-of-memory the chunk size is halved and the chunk retried (down to 1 item). An
    interrupt is a BaseException: it is never taken for an out-of-memory error and ends the
    run at once. Without ``progress`` the node's bar counts items; with one (from
    ``nodes.progress.node_progress``, passed into ``step``'s engine call too) the bar counts
    the engine's steps, forecast for the whole run after the first chunk.
    """
    bar = host.progress(total) if progress is None else None
    check = host.check_interrupt if progress is None else progress.check
    start, chunk = 0, max(1, chunk)
    while start < total:
        check()
        stop = min(total, start + chunk)
        before = progress.done if progress is not None else 0
        try:
            step(start, stop)
        except Exception as error:  # an interrupt is a BaseException and passes through
            if not host.is_oom(error) or chunk == 1:
                raise
            host.empty_cache()
            chunk //= 2
            log.warning("AdaAttN: out of memory, retrying with %d item(s) per chunk", chunk)
            if progress is not None:  # the steps of the failed try will be done again
                progress.expect(progress.done - before)
            continue
        if bar is not None:
            bar.update_absolute(stop, total)
        elif start == 0:
            forecast(progress, progress.done - before, stop, total - stop)
        start = stop
    release(progress)
