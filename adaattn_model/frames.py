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
* ``cut_threshold``: a hard cut resets both. The signal is the mean squared change of the
  normalised content key over the whole frame (about 2 * (1 - correlation) of the two
  frames: ~0.01-0.1 between consecutive frames of a real clip, ~1.9-2.0 from one scene to an
  unrelated one); a frame whose change exceeds the threshold and ``CUT_RATIO`` times the
  clip's running typical change starts afresh.

Cosine attention (``AttentionSpec("cosine")``) is available for every family, and the
sampling is the same for every frame (exact, or official with one seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .adaattn import LayerStatistics, StyleSource, apply_statistics, attention_statistics
from .detail import restore_detail_
from .encoding_cache import EncodingCache
from .forecast import encode_units, stylize_units
from .functional import calc_mean_std, crop_padding, padded_size
from .model import AdaAttNModel
from .pipeline import MIN_SIZE, SIZE_MULTIPLE, Style, StylizeOptions, chosen_layers, encode_content, style_sources
from .progress import Progress
from .vgg import VGGEncoder


@dataclass(frozen=True)
class Stabilizer:
    """Temporal stabilisers (0 switches each off)."""

    temporal_smoothing: float = 0.0
    change_threshold: float = 0.5
    shared_normalization: float = 0.0
    cut_threshold: float = 0.0  # 0: no scene-cut detection

    def __post_init__(self) -> None:
        if not 0.0 <= self.temporal_smoothing < 1.0:
            raise ValueError(f"temporal_smoothing must be in [0, 1), got {self.temporal_smoothing}")
        if not self.change_threshold > 0:
            raise ValueError(f"change_threshold must be > 0, got {self.change_threshold}")
        if not 0.0 <= self.shared_normalization < 1.0:
            raise ValueError(f"shared_normalization must be in [0, 1), got {self.shared_normalization}")
        if not self.cut_threshold >= 0:
            raise ValueError(f"cut_threshold must be >= 0, got {self.cut_threshold}")


@dataclass
class LayerState:
    key: Tensor | None = None  # previous frame's content key [1,Ck,h,w]
    mean: Tensor | None = None  # previous frame's smoothed statistics [1,C,h,w]
    std: Tensor | None = None
    norm: tuple[Tensor, Tensor] | None = None  # running content normalisation [1,C,1,1] x 2


@dataclass
class CutState:
    key: Tensor | None = None  # previous frame's content key at the detector's layer [1,Ck,h,w]
    typical: float | None = None  # running mean of the change between frames of one scene


@dataclass
class FrameState:
    """What carries over from one chunk of frames to the next."""

    layers: dict[str, LayerState] = field(default_factory=dict)
    cut: CutState = field(default_factory=CutState)

    def copy(self) -> FrameState:
        """A copy that can advance without changing this one (its tensors are never modified in place)."""
        return FrameState({k: replace(v) for k, v in self.layers.items()}, replace(self.cut))


# Chosen on a real clip (README, benchmarks/bench_video.py): 37% less short-range warping error
# for the lite model at the same style loss. Without cut detection a hard cut carried over 8-9% of the
# previous statistics; with it, none.
DEFAULT_STABILIZER = Stabilizer(temporal_smoothing=0.9, change_threshold=0.5, cut_threshold=1.0)

# A cut must also stand out from the clip's own motion: CUT_RATIO times its running typical change.
CUT_RATIO = 4.0
CUT_MOMENTUM = 0.9


def key_change(key: Tensor, previous: Tensor) -> float:
    """Mean squared change of a normalised content key [1,Ck,h,w] between two frames."""
    return float((key.float() - previous.float()).pow(2).mean())


def detect_cuts(keys: Tensor, state: CutState, threshold: float) -> list[bool]:
    """For each frame of ``keys`` [N,Ck,h,w]: does a new scene start there? Updates ``state``."""
    cuts = []
    for i in range(keys.shape[0]):
        key = keys[i : i + 1]
        cut = False
        if state.key is not None and state.key.shape == key.shape:
            change = key_change(key, state.key)
            cut = threshold > 0 and change > threshold and (state.typical is None or change > CUT_RATIO * state.typical)
            if not cut:
                typical = change if state.typical is None else state.typical
                state.typical = CUT_MOMENTUM * typical + (1 - CUT_MOMENTUM) * change
            else:
                state.typical = None  # the new scene has its own motion
        cuts.append(cut)
        state.key = key.float()
    return cuts


def smooth_statistics(
    stats: LayerStatistics, keys: Tensor, state: LayerState, stabilizer: Stabilizer, cuts: Sequence[bool] = ()
) -> None:
    """Apply temporal smoothing frame by frame, in place on ``stats``; updates ``state``.

    Frames flagged in ``cuts`` start a new scene: nothing carries over into them."""
    for i in range(keys.shape[0]):
        key = keys[i : i + 1].float()
        cut = i < len(cuts) and cuts[i]
        if state.key is not None and state.key.shape == key.shape and not cut:
            change = (key - state.key).pow(2).mean(dim=1, keepdim=True)
            carry = stabilizer.temporal_smoothing * torch.exp(-change / stabilizer.change_threshold)
            stats.mean[i : i + 1] += carry * (state.mean - stats.mean[i : i + 1])
            stats.std[i : i + 1] += carry * (state.std - stats.std[i : i + 1])
        state.key, state.mean, state.std = key, stats.mean[i : i + 1].clone(), stats.std[i : i + 1].clone()


def shared_normalization(
    feature: Tensor, state: LayerState, momentum: float, cuts: Sequence[bool] = ()
) -> tuple[Tensor, Tensor]:
    """Per-frame (mean, std) [N,C,1,1] replaced by their running average over the frames (restarted at cuts)."""
    means, stds = calc_mean_std(feature.float())
    out_m, out_s = torch.empty_like(means), torch.empty_like(stds)
    for i in range(feature.shape[0]):
        m, s = means[i : i + 1], stds[i : i + 1]
        cut = i < len(cuts) and cuts[i]
        if state.norm is not None and state.norm[0].shape == m.shape and not cut:
            m = momentum * state.norm[0] + (1 - momentum) * m
            s = momentum * state.norm[1] + (1 - momentum) * s
        state.norm = (m, s)
        out_m[i : i + 1], out_s[i : i + 1] = m, s
    return out_m, out_s


def stylize_frames(
    model: AdaAttNModel,
    encoder: VGGEncoder,
    frames: Tensor,
    sources: Tensor | Style | Sequence[StyleSource | Tensor | Style],
    options: StylizeOptions = StylizeOptions(),
    stabilizer: Stabilizer = Stabilizer(),
    *,
    chunk: int = 4,
    state: FrameState | None = None,
    callback: Callable[[int, int], None] | None = None,
    cache: EncodingCache | None = None,
    progress: Progress | None = None,
) -> Iterator[Tensor]:
    """Stylise ``frames`` [T,3,H,W] in order; yields outputs [n,3,H,W] chunk by chunk.

    ``sources`` are already-encoded styles (:class:`StyleSource`, batch 1), or style images
    (batch 1), which are encoded as the core encodes them (``options.style_max_side``,
    through ``cache``). ``state`` carries the stabilisers across calls (a long clip fed in
    pieces); a new one starts fresh. ``progress`` steps through every stage (VGG and decoder
    layers, attention blocks) and is checked between chunks; all chunks' steps are announced
    before the first (:func:`frame_units`). A cancel raised from it leaves ``state`` as it was
    after the last chunk yielded.
    """
    family = model.family
    layers, spec = chosen_layers(model, options)
    detail = options.detail_for(family)
    if options.color != "none":
        raise ValueError(f"the frame path has no colour modes; got color={options.color!r}")
    if isinstance(sources, (Tensor, Style)) or not all(isinstance(s, StyleSource) for s in sources):
        sources = style_sources(model, encoder, sources, options, cache=cache)
    state = state if state is not None else FrameState()
    total = frames.shape[0]
    if progress is not None:  # every chunk's steps, announced before the first, so the bar's total is right
        reserved_before = progress.reserved
        progress.reserve_at_least(frame_units(model, encoder, frames.shape, chunk, sources, options))
    for start in range(0, total, max(1, chunk)):
        stop = min(total, start + max(1, chunk))
        if progress is not None:
            progress.check()
        encoded = encode_content(encoder, frames[start:stop], family.layers, progress=progress)
        advanced = state.copy()  # committed once the chunk is done: a cancel inside it changes nothing
        cuts: list[bool] = []
        if stabilizer.cut_threshold > 0:  # detected at the deepest stylised layer, reset at every layer
            deepest = max(layers, key=family.layers.index)
            cuts = detect_cuts(encoded.keys[deepest], advanced.cut, stabilizer.cut_threshold)
        feats = {}
        for layer in family.layers:
            feature = encoded.features[layer]
            if layer not in layers:
                feats[layer] = feature
                continue
            layer_state = advanced.layers.setdefault(layer, LayerState())
            stats = attention_statistics(
                layer, encoded, sources, projections=model.projections(layer), spec=spec, sampling=options.sampling,
                max_sample=family.max_sample[layer], blend=options.blend, budget_bytes=options.budget(feature.device),
                progress=progress,
            )  # fmt: skip
            if stabilizer.temporal_smoothing > 0:
                smooth_statistics(stats, encoded.keys[layer], layer_state, stabilizer, cuts)
            norm = None
            if stabilizer.shared_normalization > 0:
                norm = shared_normalization(feature, layer_state, stabilizer.shared_normalization, cuts)
            feats[layer] = apply_statistics(feature, stats, strength=options.alpha, normalization=norm)
        out = crop_padding(model.decode(feats, progress=progress), encoded.pads)
        if detail:  # in place on the decoder's own output (a float32 copy only when it ran in half precision)
            out = restore_detail_(out.float(), frames[start:stop].to(out.device), detail)
        state.layers, state.cut = advanced.layers, advanced.cut
        yield out
        if callback is not None:
            callback(stop, total)
    if progress is not None and progress.reserved > reserved_before:  # a forecast that was too high
        progress.release(progress.reserved - reserved_before)


def frame_units(
    model: AdaAttNModel,
    encoder: VGGEncoder,
    shape: Sequence[int],
    chunk: int,
    sources: Sequence[StyleSource],
    options: StylizeOptions = StylizeOptions(),
) -> int:
    """Progress steps of :func:`stylize_frames` for frames of ``shape`` [T,3,H,W] in chunks of ``chunk``
    with encoded ``sources`` (a caller that feeds a clip in pieces can announce the whole of it)."""
    layers, _ = chosen_layers(model, options)
    total, height, width = shape[0], *(padded_size(n, SIZE_MULTIPLE, MIN_SIZE) for n in shape[-2:])
    device = next(encoder.parameters()).device
    style_shapes = [tuple(s.style.size) for s in sources]
    units = 0
    for start in range(0, total, max(1, chunk)):
        n = min(total, start + max(1, chunk)) - start
        units += encode_units(encoder, (n, 3, height, width), model.family.layers, None, device)
        units += stylize_units(model, (height, width), n, layers, style_shapes, options.sampling, options.blend,
                               options.budget(device), None, device, layer_step=0)  # fmt: skip
    return units
