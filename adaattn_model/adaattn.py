"""One AdaAttN layer: attention-weighted mean/std of the style, applied to the content.

Paper notation: F_c, F_s are the content/style features at a layer, K_c, K_s their keys
(:mod:`adaattn_model.features`). The learned projections are 1x1 convs named as in the
reference: ``f`` makes the queries Q = f(K_c), ``g`` the keys K = g(K_s), ``h`` the
values V = h(F_s). With the attention A (softmax of Q K^T, or a cosine variant),

    M = A V,   S = sqrt(relu(A V^2 - M^2)),   output = S * mvn(F_c) + M.

Parameter-free AdaAttN (the ``lite`` family) uses Q = K_c, K = K_s, V = F_s.

Beyond the reference: several style sources blended (``mix`` or ``match``) with scalar
weights and per-pixel region maps over the content, style masks over each style image,
a strength that interpolates from the incoming feature, all with the same kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    DEFAULT_BUDGET_BYTES,
    AttentionSpec,
    StyleBank,
    attended_moments,
    make_bank,
    moments_to_mean_std,
    prepare_query,
)
from .features import EncodedImage
from .functional import batch_item, mean_variance_norm, reflect_pad
from .progress import Progress, expect, step
from .sampling import Sampling

BLEND_MODES = ("mix", "match")


class AttentionProjections(nn.Module):
    """The learned 1x1 convs of one layer: ``f`` (query), ``g`` (key), ``h`` (value)."""

    def __init__(self, channels: int, key_channels: int) -> None:
        super().__init__()
        self.f = nn.Conv2d(key_channels, key_channels, 1)
        self.g = nn.Conv2d(key_channels, key_channels, 1)
        self.h = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _project(conv: nn.Conv2d, positions: Tensor) -> Tensor:
        # A 1x1 conv acts on each position alone, so it can run on a subset of positions.
        return F.linear(positions, conv.weight.flatten(1), conv.bias)

    def query(self, positions: Tensor) -> Tensor:
        return self._project(self.f, positions)

    def key(self, positions: Tensor) -> Tensor:
        return self._project(self.g, positions)

    def value(self, positions: Tensor) -> Tensor:
        return self._project(self.h, positions)


@dataclass(frozen=True)
class StyleSource:
    """A style and how it is used at a layer.

    ``weight``: relative weight among the sources. ``region``: optional map [1|N,H,W] in
    [0,1] over the *content* image saying where this style applies (regional styles);
    where no region covers a content position, the incoming feature is kept.
    ``mask``: optional map [1|N_s,H_s,W_s] in [0,1] over the *style* image saying which
    style positions may be attended to.
    """

    style: EncodedImage
    weight: float = 1.0
    region: Tensor | None = None
    mask: Tensor | None = None


def flatten_positions(x: Tensor) -> Tensor:
    """[1,C,h,w] -> [h*w, C] (row-major positions, as the reference flattens them)."""
    return x.flatten(2)[0].t()


def map_to_layer(m: Tensor, pads: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """A map [N,H,W] over an image, padded like the image and averaged to ``size``: [N, h*w]."""
    m = reflect_pad(m[:, None].float(), *pads)
    return F.adaptive_avg_pool2d(m, size).flatten(1)


def layer_map(m: Tensor, index: int, pads: tuple[int, int, int, int], size: tuple[int, int]) -> Tensor:
    """Map ``m`` [1|N,H,W] of batch element ``index`` at a layer's ``size``, flattened: [h*w]."""
    return map_to_layer(batch_item(m, index), pads, size)[0]


def _check_map(m: Tensor | None, size: tuple[int, int], batch: int, what: str) -> None:
    if m is None:
        return
    if m.ndim != 3 or tuple(m.shape[-2:]) != tuple(size) or m.shape[0] not in (1, batch):
        raise ValueError(
            f"{what} has shape {list(m.shape)}; expected [1 or {batch}, {size[0]}, {size[1]}] (the image's size)"
        )
    if not bool(torch.isfinite(m).all()) or float(m.min()) < 0:
        raise ValueError(f"{what} must hold finite values >= 0")


def _style_bank(
    source: StyleSource,
    index: int,
    layer: str,
    projections: AttentionProjections | None,
    spec: AttentionSpec,
    sampling: Sampling,
    max_sample: int,
) -> StyleBank:
    style = source.style
    keys = flatten_positions(style.keys[layer][index : index + 1])
    values = flatten_positions(style.features[layer][index : index + 1])
    column = None
    if source.mask is not None:
        column = layer_map(source.mask, index, style.pads, tuple(style.keys[layer].shape[-2:])).to(keys.device)
    chosen = sampling.indices(keys.shape[0], max_sample)
    if chosen is not None:  # the same positions for keys, values and mask
        chosen = chosen.to(keys.device)
        keys, values = keys[chosen], values[chosen]
        column = column[chosen] if column is not None else None
    if column is not None and not bool((column > 0).any()):
        raise ValueError(f"the style mask leaves no style position to attend to at {layer}")
    if projections is not None:
        keys, values = projections.key(keys), projections.value(values)
    return make_bank(keys, values, spec, column)


@dataclass(frozen=True)
class LayerStatistics:
    """Attended style statistics at one layer, float32: ``mean`` and ``std`` [N,C,h,w], and
    ``coverage`` [N,1,h,w] (1 where some style applies; below 1 where regions leave gaps)."""

    mean: Tensor
    std: Tensor
    coverage: Tensor


def _check_sources(layer: str, content: EncodedImage, sources: Sequence[StyleSource], blend: str) -> None:
    if blend not in BLEND_MODES:
        raise ValueError(f"unknown blend mode {blend!r}; expected one of {', '.join(BLEND_MODES)}")
    if not sources:
        raise ValueError("AdaAttN needs at least one style")
    if layer not in content.features:
        raise ValueError(f"the content was not encoded at {layer}")
    batch = content.batch
    for k, source in enumerate(sources):
        if layer not in source.style.features:
            raise ValueError(f"style {k + 1} was not encoded at {layer}")
        if source.style.batch not in (1, batch):
            raise ValueError(
                f"style {k + 1} has a batch of {source.style.batch} for {batch} contents; "
                "give one style for all contents, or one per content"
            )
        if not source.weight >= 0:
            raise ValueError(f"style {k + 1} has a negative or NaN weight ({source.weight})")
        _check_map(source.region, content.size, batch, f"region map of style {k + 1}")
        _check_map(source.mask, source.style.size, source.style.batch, f"style mask of style {k + 1}")
    if sum(s.weight for s in sources) <= 0:
        raise ValueError("the style weights add up to zero")


def attention_statistics(
    layer: str,
    content: EncodedImage,
    sources: Sequence[StyleSource],
    *,
    projections: AttentionProjections | None,
    spec: AttentionSpec,
    sampling: Sampling,
    max_sample: int,
    blend: str = "mix",
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: Progress | None = None,
) -> LayerStatistics:
    """The attention-weighted style mean and std at ``layer`` for every content in the batch.

    Each style source has batch 1 (shared by all contents) or N (paired). ``blend``:
    ``mix`` mixes each source's attention distribution by weight (so the moments mix
    linearly); ``match`` is one attention over all sources' positions with log-weight
    biases, so each content position picks the style that fits it. ``progress`` steps per
    block of the attention kernel (:func:`~adaattn_model.attention.attended_moments`).
    """
    _check_sources(layer, content, sources, blend)
    feat = content.features[layer]
    batch, channels = feat.shape[:2]
    size = tuple(feat.shape[-2:])
    shared = {k: _style_bank(s, 0, layer, projections, spec, sampling, max_sample)
              for k, s in enumerate(sources) if s.style.batch == 1}  # fmt: skip
    mean = torch.empty(batch, channels, *size, device=feat.device)
    std = torch.empty_like(mean)
    coverage = torch.empty(batch, 1, *size, device=feat.device)
    for b in range(batch):
        banks = [
            shared[k] if k in shared else _style_bank(s, b, layer, projections, spec, sampling, max_sample)
            for k, s in enumerate(sources)
        ]
        keys = flatten_positions(content.keys[layer][b : b + 1])
        query = prepare_query(projections.query(keys) if projections is not None else keys, spec)
        weights, cover = _source_weights(sources, b, content.pads, size, query.device)
        if len(banks) == 1:  # one source: its weight and region only set the coverage
            moments = attended_moments(query, banks, spec, budget_bytes=budget_bytes, progress=progress)
        elif blend == "match":
            moments = attended_moments(
                query, banks, spec, row_weights=weights, budget_bytes=budget_bytes, progress=progress
            )
        else:
            total = torch.stack(weights).sum(dim=0)
            moments = 0
            for bank, w in zip(banks, weights):
                if bool((w > 0).any()):
                    share = (w / total.clamp_min(1e-12))[:, None]
                    moments = moments + share * attended_moments(
                        query, [bank], spec, budget_bytes=budget_bytes, progress=progress
                    )
        del query  # before the statistics' maps are written
        m, sd = moments_to_mean_std(moments)
        if spec.global_share:
            whole_mean, whole_std = moments_to_mean_std(uniform_moments(banks, weights))
            m, sd = torch.lerp(m, whole_mean, spec.global_share), torch.lerp(sd, whole_std, spec.global_share)
        mean[b].view(channels, -1).copy_(m.t())  # no transposed temporary
        std[b].view(channels, -1).copy_(sd.t())
        coverage[b] = cover.view(1, *size)
    return LayerStatistics(mean, std, coverage)


def uniform_moments(banks: Sequence[StyleBank], weights: Sequence[Tensor]) -> Tensor:
    """The moments [v, v**2] that uniform attention gives (AdaIN's whole-style statistics):
    each bank's mean over its positions (weighted by its style mask), mixed across banks by
    the per-position source weights. [1, 2C] for one bank, else [n_c, 2C]."""

    def whole(bank: StyleBank) -> Tensor:
        if bank.column_weight is None:
            return bank.values.mean(dim=0, keepdim=True)
        w = bank.column_weight.to(bank.values)
        return (w @ bank.values)[None] / w.sum()

    if len(banks) == 1:
        return whole(banks[0])
    total = torch.stack(list(weights)).sum(dim=0).clamp_min(1e-12)
    return sum((w / total)[:, None] * whole(bank) for bank, w in zip(banks, weights))


def apply_statistics(
    feature: Tensor,
    stats: LayerStatistics,
    *,
    strength: float = 1.0,
    region: Tensor | None = None,
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    incoming: Tensor | None = None,
    normalization: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """``std * mvn(feature) + mean``, blended into ``incoming`` by strength, region and coverage.

    ``feature`` [N,C,h,w] is the raw content feature; ``incoming`` (default: ``feature``)
    what the result replaces; ``region`` [1|N,H,W] a content mask at the padded image's
    pre-padding size (``pads`` as in :class:`EncodedImage`). ``normalization`` (mean, std)
    [N,C,1,1] replaces the per-image statistics of ``mvn``. Returns ``feature``'s dtype.
    """
    f = feature.float()
    if normalization is None:
        normalized = mean_variance_norm(f)
    else:
        normalized = (f - normalization[0]) / normalization[1]
    if normalized.requires_grad or stats.std.requires_grad or stats.mean.requires_grad:
        stylised = stats.std * normalized + stats.mean
    else:  # the same two operations in place: two fewer maps of the layer's size
        stylised = normalized.mul_(stats.std).add_(stats.mean)
    amount = stats.coverage * strength
    if region is not None:
        size = tuple(feature.shape[-2:])
        maps = torch.stack([layer_map(region, b, pads, size) for b in range(feature.shape[0])])
        amount = amount * maps.view(-1, 1, *size).to(amount.device)
    if bool((amount == 1).all()):
        return stylised.to(feature.dtype)
    base = (incoming if incoming is not None else feature).float()
    return (base + amount * (stylised - base)).to(feature.dtype)


def adaattn_layer(
    layer: str,
    content: EncodedImage,
    sources: Sequence[StyleSource],
    *,
    projections: AttentionProjections | None,
    spec: AttentionSpec,
    sampling: Sampling,
    max_sample: int,
    blend: str = "mix",
    strength: float = 1.0,
    region: Tensor | None = None,
    incoming: Tensor | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    progress: Progress | None = None,
) -> Tensor:
    """AdaAttN at ``layer`` for every content in the batch; returns [N,C,h,w].

    The result is ``incoming + strength * region * coverage * (stylised - incoming)``,
    where ``incoming`` defaults to the raw content feature, ``region`` [1|N,H,W] is an
    optional content mask, and coverage is 1 except where region-limited sources cover
    nothing. See :func:`attention_statistics` for the sources, ``blend`` and ``progress``.
    """
    _check_map(region, content.size, content.batch, "content mask")
    expect(progress, 1)
    stats = attention_statistics(
        layer, content, sources, projections=projections, spec=spec, sampling=sampling, max_sample=max_sample,
        blend=blend, budget_bytes=budget_bytes, progress=progress,
    )  # fmt: skip
    step(progress)  # the statistics are whole-layer passes after the kernel's last block; so is applying them
    return apply_statistics(
        content.features[layer], stats, strength=strength, region=region, pads=content.pads, incoming=incoming
    )


def _source_weights(
    sources: Sequence[StyleSource], b: int, pads: tuple[int, int, int, int], size: tuple[int, int], device: torch.device
) -> tuple[list[Tensor], Tensor]:
    """Per-source weights [n_c] at content element ``b``, and the coverage [n_c].

    A source's weight is its scalar weight times its region map (1 without one). Coverage
    is min(1, sum of region maps) where some weight is positive, else 0.
    """
    n = size[0] * size[1]
    weights, regions = [], torch.zeros(n, device=device)
    for s in sources:
        if s.region is None:
            r = torch.ones(n, device=device)
        else:
            r = layer_map(s.region, b, pads, size).to(device)
        regions += r
        weights.append(s.weight * r)
    coverage = regions.clamp(max=1.0) * (torch.stack(weights).sum(dim=0) > 0)
    return weights, coverage
