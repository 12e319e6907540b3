"""The training losses of AdaAttN (reference code) and our cross-image similarity loss.

With F_c, F_s, F_cs the frozen-VGG features of content, style and output at a layer:

* global:  sum over layers of MSE(mean F_cs, mean F_s) + MSE(std F_cs, std F_s)
* local:   sum over layers of MSE(F_cs, T), T the parameter-free AdaAttN of the layer (shallow
           keys, raw style values, plain softmax; no gradient)
* content: sum over layers of MSE(mvn F_cs, mvn F_c) (weight 0 in the released recipe)
* similarity (video family, ours): sum over layers of mean |P_c - P_o|, P the column-normalised
           cosine-distance matrix between the features of two contents (or their outputs)

mean/std/mvn use the unbiased variance plus 1e-5. Every term is returned already weighted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import AttentionSpec
from ..features import EncodedImage
from ..functional import calc_mean_std, mean_variance_norm
from ..model import AdaAttNModel
from ..sampling import Sampling
from ..vgg import TAPS, VGGEncoder
from .forward import LOSS_LAYERS, adaattn_train, check_loss_layers, encode_layers, stylize_train

LOCAL_MAX_SAMPLE = 64 * 64  # style positions of the local-loss target (reference)
SIMILARITY_LAYERS = ("relu3_1", "relu4_1", "relu5_1")
# Floor of the mean distance in a column: a flat image (all distances ~0, e.g. a freshly
# initialised decoder's output) would otherwise divide round-off by round-off.
SIMILARITY_FLOOR = 1e-3
_SOFTMAX = AttentionSpec("softmax")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms (the reference recipe: content 0, global 10, local 3)."""

    content: float = 0.0
    global_: float = 10.0
    local: float = 3.0
    similarity: float = 0.0


def default_loss_layers(model: AdaAttNModel) -> tuple[str, ...]:
    """relu2_1..relu5_1 for the image model; for the video model the layers its decoder reaches
    (relu2_1, relu3_1: it decodes from relu3_1)."""
    stop = TAPS.index(model.family.decoder_start) if model.family.name == "official-video" else len(TAPS)
    return tuple(layer for layer in LOSS_LAYERS if TAPS.index(layer) <= stop)


def sampling_for(seed: int | None) -> Sampling:
    """None: every style position; an int: the reference subsampling with that seed."""
    return Sampling() if seed is None else Sampling("official", int(seed))


def _wide(x: Tensor) -> Tensor:
    """float32 at least (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def mse(a: Tensor, b: Tensor) -> Tensor:
    return F.mse_loss(_wide(a), _wide(b))


def global_loss(output: dict[str, Tensor], style: dict[str, Tensor], layers: Sequence[str]) -> Tensor:
    total = 0
    for layer in layers:
        mo, so = calc_mean_std(_wide(output[layer]))
        ms, ss = calc_mean_std(_wide(style[layer]))
        total = total + mse(mo, ms) + mse(so, ss)
    return total


def content_loss(output: dict[str, Tensor], content: dict[str, Tensor], layers: Sequence[str]) -> Tensor:
    total = 0
    for layer in layers:
        total = total + mse(mean_variance_norm(_wide(output[layer])), mean_variance_norm(_wide(content[layer])))
    return total


@torch.no_grad()
def local_target(content: EncodedImage, style: EncodedImage, layer: str, sampling: Sampling) -> Tensor:
    """Parameter-free AdaAttN at ``layer`` [N,C,h,w]: shallow keys, raw style values, plain softmax.

    Style positions above 4096 are subsampled by ``sampling`` (one selection for the
    batch, as the reference). Carries no gradient.
    """
    return adaattn_train(content.features[layer], content.keys[layer], style.features[layer], style.keys[layer],
                         spec=_SOFTMAX, sampling=sampling, max_sample=LOCAL_MAX_SAMPLE)  # fmt: skip


def local_loss(
    output: dict[str, Tensor], content: EncodedImage, style: EncodedImage, layers: Sequence[str], sampling: Sampling
) -> Tensor:
    total = 0
    for layer in layers:
        total = total + mse(output[layer], local_target(content, style, layer, sampling))
    return total


def distance_pattern(a: Tensor, b: Tensor) -> Tensor:
    """Column-normalised cosine distances [N, n_a, n_b] between the positions of ``a`` and ``b`` [N,C,h,w].

    Each column (a position of ``b``) is divided by its sum over the positions of ``a``,
    floored at ``n_a * SIMILARITY_FLOOR``.
    """
    a = _wide(a).flatten(2).transpose(1, 2)
    b = _wide(b).flatten(2).transpose(1, 2)
    cos = F.normalize(a, dim=-1, eps=1e-12) @ F.normalize(b, dim=-1, eps=1e-12).transpose(1, 2)
    distance = 1.0 - cos
    return distance / distance.sum(dim=1, keepdim=True).clamp_min(distance.shape[1] * SIMILARITY_FLOOR)


def similarity_loss(
    content_1: dict[str, Tensor],
    content_2: dict[str, Tensor],
    output_1: dict[str, Tensor],
    output_2: dict[str, Tensor],
    layers: Sequence[str] = SIMILARITY_LAYERS,
) -> Tensor:
    """Sum over ``layers`` of mean |P_c - P_o| (P: :func:`distance_pattern` of the two images)."""
    total = 0
    for layer in layers:
        with torch.no_grad():
            target = distance_pattern(content_1[layer], content_2[layer])
        total = total + (distance_pattern(output_1[layer], output_2[layer]) - target).abs().mean()
    return total


def _stylizer(model: nn.Module) -> Callable[..., Tensor]:
    if isinstance(model, AdaAttNModel):
        return lambda content, style, sampling: stylize_train(model, content, style, sampling)
    return model  # a wrapper (e.g. DDP around a TrainForward) called as model(content, style, sampling)


def unwrap(model: nn.Module) -> AdaAttNModel:
    while not isinstance(model, AdaAttNModel):
        model = model.module if hasattr(model, "module") else model.model
    return model


def losses_and_output(
    model: nn.Module,
    encoder: VGGEncoder,
    content: Tensor,
    style: Tensor,
    *,
    weights: LossWeights = LossWeights(),
    seed: int | None = None,
    pair: Tensor | None = None,
    loss_layers: Sequence[str] | None = None,
    similarity_layers: Sequence[str] = SIMILARITY_LAYERS,
) -> tuple[dict[str, Tensor], Tensor]:
    """:func:`losses` and the stylised output [N,3,H,W] (with ``pair``: [2N,...], contents then pairs)."""
    core = unwrap(model)
    layers = check_loss_layers(loss_layers if loss_layers is not None else default_loss_layers(core))
    sim_layers = check_loss_layers(similarity_layers, "similarity layers") if pair is not None else ()
    if content.shape[0] != style.shape[0]:
        raise ValueError(f"{content.shape[0]} contents for {style.shape[0]} styles; give one style per content")
    batch = content.shape[0]
    if pair is not None:
        if pair.shape != content.shape:
            raise ValueError(f"the paired contents have shape {list(pair.shape)}, expected {list(content.shape)}")
        content, style = torch.cat([content, pair]), torch.cat([style, style])
    sampling = sampling_for(seed)
    needed = set(layers) | set(sim_layers) | set(core.family.layers)
    with torch.no_grad():
        enc_c = encode_layers(encoder, content, needed)
        enc_s = encode_layers(encoder, style, set(layers) | set(core.family.layers))
    output = _stylizer(model)(enc_c, enc_s, sampling)
    deepest = max(set(layers) | set(sim_layers), key=TAPS.index)
    out_feats = {k: v for k, v in encoder.stages(output, upto=deepest)}
    terms = {
        "content": weights.content * content_loss(out_feats, enc_c.features, layers),
        "global": weights.global_ * global_loss(out_feats, enc_s.features, layers),
        "local": weights.local * local_loss(out_feats, enc_c, enc_s, layers, sampling),
    }
    if pair is not None:
        first = {k: v[:batch] for k, v in enc_c.features.items()}
        second = {k: v[batch:] for k, v in enc_c.features.items()}
        out_first = {k: v[:batch] for k, v in out_feats.items()}
        out_second = {k: v[batch:] for k, v in out_feats.items()}
        terms["similarity"] = weights.similarity * similarity_loss(first, second, out_first, out_second, sim_layers)
    return terms, output


def losses(
    model: nn.Module,
    encoder: VGGEncoder,
    content: Tensor,
    style: Tensor,
    *,
    weights: LossWeights = LossWeights(),
    seed: int | None = None,
    pair: Tensor | None = None,
    loss_layers: Sequence[str] | None = None,
    similarity_layers: Sequence[str] = SIMILARITY_LAYERS,
) -> dict[str, Tensor]:
    """The weighted loss terms of one batch: {"content", "global", "local"} (+ "similarity" with ``pair``).

    ``content`` and ``style`` [N,3,H,W] in [0,1] are paired one to one. ``seed`` None: no
    subsampling (exact); an int: the reference subsampling with that seed in the forward
    pass and in the local loss. ``pair`` [N,3,H,W]: second contents for the similarity
    loss, stylised with the same styles. ``loss_layers``: the layers of the three image
    losses (default: :func:`default_loss_layers`), a subset of relu2_1..relu5_1.
    """
    return losses_and_output(
        model, encoder, content, style, weights=weights, seed=seed, pair=pair,
        loss_layers=loss_layers, similarity_layers=similarity_layers,
    )[0]  # fmt: skip
