"""A differentiable forward pass of a learned family, for training.

The inference engine (:mod:`adaattn_model.adaattn`) writes attention moments into
preallocated buffers with ``out=`` products, which autograd does not follow. Here the
same maths runs on whole batches in row blocks that are recomputed in the backward pass
instead of kept (``scaled_dot_product_attention`` would need equal key and value widths
for its memory-efficient kernels; AdaAttN's differ). Without gradients it gives the
engine's output to float32 round-off (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..attention import NORM_EPS, AttentionSpec, normalize_positions
from ..features import EncodedImage, from_taps
from ..functional import mean_variance_norm
from ..model import AdaAttNModel
from ..sampling import Sampling
from ..vgg import TAPS, VGGEncoder

# Layers the losses may use: relu1_1 never enters a loss in the reference.
LOSS_LAYERS = ("relu2_1", "relu3_1", "relu4_1", "relu5_1")
BLOCK_ELEMENTS = 2**24  # attention weights per row block (64 MiB of float32)


def check_loss_layers(layers: Sequence[str], what: str = "loss layers") -> tuple[str, ...]:
    """``layers`` in VGG order, each one of relu2_1..relu5_1; a ValueError otherwise."""
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"{what}: give at least one layer")
    for layer in layers:
        if layer not in LOSS_LAYERS:
            raise ValueError(f"{what}: {layer!r} is not allowed; choose from {', '.join(LOSS_LAYERS)}")
    return tuple(sorted(set(layers), key=TAPS.index))


def encode_layers(encoder: VGGEncoder, images: Tensor, layers: Sequence[str]) -> EncodedImage:
    """VGG features and shallow keys of ``images`` [N,3,H,W] at ``layers`` (any of relu1_1..relu5_1)."""
    layers = tuple(sorted(set(layers), key=TAPS.index))
    h, w = images.shape[-2:]
    return from_taps(encoder.stages(images, upto=layers[-1]), (h, w), layers, size=(h, w))


def _positions(x: Tensor) -> Tensor:
    """[N,C,h,w] -> [N, h*w, C] (row-major positions)."""
    return x.flatten(2).transpose(1, 2)


def _moments_block(q: Tensor, k: Tensor, vv: Tensor, kind: str, inv_temperature: float) -> Tensor:
    logits = q @ k.transpose(1, 2)
    if kind == "cosine":
        weights = (logits + 1.0).relu()
        return (weights @ vv) / (weights.sum(dim=-1, keepdim=True) + NORM_EPS)
    return torch.softmax(logits * inv_temperature, dim=-1) @ vv


def attend(query: Tensor, keys: Tensor, values: Tensor, spec: AttentionSpec) -> tuple[Tensor, Tensor]:
    """Attention-weighted mean and std [N, n_c, C] of ``values`` [N, n_s, C], differentiable.

    ``query`` [N, n_c, d], ``keys`` [N, n_s, d]; computed in float32 (float64 stays).
    Softmax logits are not scaled by 1/sqrt(d) (the reference), only divided by the
    spec's temperature. Content positions run in blocks of whole rows (so each softmax
    is exact); with gradients each block is recomputed in the backward pass, so the
    attention matrix is never held whole.
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    query, keys, values = query.to(dtype), keys.to(dtype), values.to(dtype)
    vv = torch.cat([values, values * values], dim=-1)
    if spec.normalized:
        query, keys = normalize_positions(query), normalize_positions(keys)
    rows = max(1, BLOCK_ELEMENTS // max(1, keys.shape[1] * query.shape[0]))
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, keys, vv))
    args = (spec.kind, 1.0 / spec.temperature)
    blocks = []
    with torch.autocast(query.device.type, enabled=False):
        for start in range(0, query.shape[1], rows):
            q = query[:, start : start + rows]
            if grad and rows < query.shape[1]:
                blocks.append(checkpoint(_moments_block, q, keys, vv, *args, use_reentrant=False))
            else:
                blocks.append(_moments_block(q, keys, vv, *args))
    moments = torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
    mean, second = moments.chunk(2, dim=-1)
    return mean, (second - mean * mean).relu().sqrt()


def adaattn_train(
    content_feature: Tensor,
    content_key: Tensor,
    style_feature: Tensor,
    style_key: Tensor,
    *,
    projections=None,
    spec: AttentionSpec,
    sampling: Sampling,
    max_sample: int,
) -> Tensor:
    """AdaAttN of one layer for a batch of (content, style) pairs: ``std * mvn(F_c) + mean`` [N,C,h,w].

    Style positions are subsampled once for the whole batch (the reference's rule);
    ``projections`` None is the parameter-free form (Q = K_c, K = K_s, V = F_s).
    """
    n, c, h, w = content_feature.shape
    q, k, v = _positions(content_key), _positions(style_key), _positions(style_feature)
    chosen = sampling.indices(k.shape[1], max_sample)
    if chosen is not None:
        chosen = chosen.to(k.device)
        k, v = k[:, chosen], v[:, chosen]
    if projections is not None:
        q, k, v = projections.query(q), projections.key(k), projections.value(v)
    mean, std = attend(q, k, v, spec)
    mean = mean.transpose(1, 2).reshape(n, c, h, w)
    std = std.transpose(1, 2).reshape(n, c, h, w)
    return std * mean_variance_norm(content_feature.to(mean.dtype)) + mean


def stylize_train(
    model: AdaAttNModel,
    content: EncodedImage,
    style: EncodedImage,
    sampling: Sampling | None = None,
    *,
    checkpoint_activations: bool = False,
) -> Tensor:
    """The family's stylised images [N,3,H,W] (unclamped), differentiable w.r.t. the model.

    ``content`` and ``style`` are encoded at (at least) the family's layers, with equal
    batches: element i of the content is stylised with element i of the style.
    ``checkpoint_activations`` recomputes each attention layer and the decoder in the
    backward pass instead of keeping their activations.
    """
    family = model.family
    sampling = sampling if sampling is not None else Sampling()
    if not family.learned:
        raise ValueError(f"the {family.name} family has no trainable attention; train official-image or official-video")
    if content.batch != style.batch:
        raise ValueError(f"{content.batch} contents for {style.batch} styles; training pairs them one to one")
    out = {}
    for layer in family.layers:
        args = (content.features[layer], content.keys[layer], style.features[layer], style.keys[layer])

        def run(*a, layer=layer):
            return adaattn_train(*a, projections=model.projections(layer), spec=family.attention,
                                 sampling=sampling, max_sample=family.max_sample[layer])  # fmt: skip

        out[layer] = checkpoint(run, *args, use_reentrant=False) if checkpoint_activations else run(*args)
    if checkpoint_activations:
        return checkpoint(model.decode, out, use_reentrant=False)
    return model.decode(out)
