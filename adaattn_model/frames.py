"""Frame sequences: the style is encoded once, frames run in chunks, optional stabilisers.

AdaAttN treats every frame on its own, so small changes between frames can change the
attended statistics and flicker. Two flow-free stabilisers of our own, each switchable:

* ``temporal_smoothing`` (lambda): where a content position looks the same as in the
  previous frame, its attended mean and std lean towards the previous frame's (already
  smoothed) values: ``s_t = s_t + lambda * g * (s_{t-1} - s_t)``, with the gate
  ``g = exp(-d / change_threshold)`` and ``d`` the mean squared change of the layer's
  normalised content key at that position. Static areas settle; moving ones (d large)
  follow the new frame at once, so nothing ghosts. No optical flow is needed.
* ``shared_normalization`` (momentum m): the content feature is normalised with
  statistics averaged over the frames so far (exponential moving average), instead of
  each frame's own, so something moving in one part of the frame does not shift the
  normalisation, and so the look, of the static parts.

Cosine attention (``AttentionSpec("cosine")``) is available for every family, and the
sampling is the same for every frame (exact, or official with one seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .adaattn import LayerStatistics, StyleSource, apply_statistics, attention_statistics
from .features import EncodedImage, encode
from .functional import calc_mean_std, crop_padding, pad_to_multiple
from .model import AdaAttNModel
from .pipeline import MIN_SIZE, SIZE_MULTIPLE, StylizeOptions, check_images, chosen_layers, model_placement
from .progress import Progress, forecast, release
from .vgg import VGGEncoder


@dataclass(frozen=True)
class Stabilizer:
    """Temporal stabilisers (0 switches each off)."""

    temporal_smoothing: float = 0.0
    change_threshold: float = 0.5
    shared_normalization: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temporal_smoothing < 1.0:
            raise ValueError(f"temporal_smoothing must be in [0, 1), got {self.temporal_smoothing}")
        if not self.change_threshold > 0:
            raise ValueError(f"change_threshold must be > 0, got {self.change_threshold}")
        if not 0.0 <= self.shared_normalization < 1.0:
            raise ValueError(f"shared_normalization must be in [0, 1), got {self.shared_normalization}")


@dataclass
class LayerState:
    key: Tensor | None = None  # previous frame's content key [1,Ck,h,w]
    mean: Tensor | None = None  # previous frame's smoothed statistics [1,C,h,w]
    std: Tensor | None = None
    norm: tuple[Tensor, Tensor] | None = None  # running content normalisation [1,C,1,1] x 2


@dataclass
class FrameState:
    """What carries over from one chunk of frames to the next."""

    layers: dict[str, LayerState] = field(default_factory=dict)

    def copy(self) -> FrameState:
        """A copy that can advance without changing this one (its tensors are never modified in place)."""
        return FrameState({k: replace(v) for k, v in self.layers.items()})


# Chosen on a real clip (README, benchmarks/bench_video.py): 37% less short-range warping error
# for the lite model at the same style loss; a hard cut carries over 8-9% of the previous statistics.
DEFAULT_STABILIZER = Stabilizer(temporal_smoothing=0.9, change_threshold=0.5)


def smooth_statistics(stats: LayerStatistics, keys: Tensor, state: LayerState, stabilizer: Stabilizer) -> None:
    """Apply temporal smoothing frame by frame, in place on ``stats``; updates ``state``."""
    for i in range(keys.shape[0]):
        key = keys[i : i + 1].float()
        if state.key is not None and state.key.shape == key.shape:
            change = (key - state.key).pow(2).mean(dim=1, keepdim=True)
            carry = stabilizer.temporal_smoothing * torch.exp(-change / stabilizer.change_threshold)
            stats.mean[i : i + 1] += carry * (state.mean - stats.mean[i : i + 1])
            stats.std[i : i + 1] += carry * (state.std - stats.std[i : i + 1])
        state.key, state.mean, state.std = key, stats.mean[i : i + 1].clone(), stats.std[i : i + 1].clone()


def shared_normalization(feature: Tensor, state: LayerState, momentum: float) -> tuple[Tensor, Tensor]:
    """Per-frame (mean, std) [N,C,1,1] replaced by their running average over the frames."""
    means, stds = calc_mean_std(feature.float())
    out_m, out_s = torch.empty_like(means), torch.empty_like(stds)
    for i in range(feature.shape[0]):
        m, s = means[i : i + 1], stds[i : i + 1]
        if state.norm is not None and state.norm[0].shape == m.shape:
            m = momentum * state.norm[0] + (1 - momentum) * m
            s = momentum * state.norm[1] + (1 - momentum) * s
        state.norm = (m, s)
        out_m[i : i + 1], out_s[i : i + 1] = m, s
    return out_m, out_s


def stylize_frames(
    model: AdaAttNModel,
    encoder: VGGEncoder,
    frames: Tensor,
    sources: Sequence[StyleSource],
    options: StylizeOptions = StylizeOptions(),
    stabilizer: Stabilizer = Stabilizer(),
    *,
    chunk: int = 4,
    state: FrameState | None = None,
    callback: Callable[[int, int], None] | None = None,
    progress: Progress | None = None,
) -> Iterator[Tensor]:
    """Stylise ``frames`` [T,3,H,W] in order; yields outputs [n,3,H,W] chunk by chunk.

    ``sources`` hold the already-encoded style(s), batch 1. ``state`` carries the
    stabilisers across calls (a long clip fed in pieces); a new one starts fresh.
    ``progress`` steps through every stage (VGG and decoder layers, attention blocks) and
    is checked between chunks; after the first chunk the rest is forecast. A cancel
    raised from it leaves ``state`` as it was after the last chunk yielded.
    """
    family = model.family
    layers, spec = chosen_layers(model, options)
    state = state if state is not None else FrameState()
    total = frames.shape[0]
    forecast_made = False  # release only what this call reserved (a caller may reserve around it)
    for start in range(0, total, max(1, chunk)):
        stop = min(total, start + max(1, chunk))
        if progress is not None:
            progress.check()
            before = progress.done
        encoded = _encode_frames(encoder, frames[start:stop], family.layers, progress)
        advanced = state.copy()  # committed once the chunk is done: a cancel inside it changes nothing
        feats = {}
        for layer in family.layers:
            feature = encoded.features[layer]
            if layer not in layers:
                feats[layer] = feature
                continue
            layer_state = advanced.layers.setdefault(layer, LayerState())
            stats = attention_statistics(
                layer, encoded, sources, projections=model.projections(layer), spec=spec, sampling=options.sampling,
                max_sample=family.max_sample[layer], blend=options.blend, budget_bytes=options.budget_bytes,
                progress=progress,
            )  # fmt: skip
            if stabilizer.temporal_smoothing > 0:
                smooth_statistics(stats, encoded.keys[layer], layer_state, stabilizer)
            norm = None
            if stabilizer.shared_normalization > 0:
                norm = shared_normalization(feature, layer_state, stabilizer.shared_normalization)
            feats[layer] = apply_statistics(feature, stats, strength=options.alpha, normalization=norm)
        out = crop_padding(model.decode(feats, progress=progress), encoded.pads)
        state.layers = advanced.layers
        if progress is not None and start == 0 and stop < total:
            forecast(progress, progress.done - before, stop, total - stop)
            forecast_made = True
        yield out
        if callback is not None:
            callback(stop, total)
    if forecast_made:
        release(progress)


def _encode_frames(
    encoder: VGGEncoder, frames: Tensor, layers: Sequence[str], progress: Progress | None
) -> EncodedImage:
    """Pad frames to a legal size and encode them (``pipeline.encode_content``, with progress)."""
    check_images(frames, "content")
    device, dtype = model_placement(encoder)
    padded, pads = pad_to_multiple(frames.to(device=device, dtype=dtype), SIZE_MULTIPLE, MIN_SIZE)
    return encode(encoder, padded, layers, pads=pads, size=tuple(frames.shape[-2:]), progress=progress)
