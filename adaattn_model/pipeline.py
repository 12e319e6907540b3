"""Stylisation end to end: pad, encode, AdaAttN per layer, decode, crop.

Any content size works: the content is reflect-padded to a multiple of 16 (at least 32,
so relu5_1 is 2x2 or more) and the output cropped back, so the result always has the
input's size. Styles of any size work; sides under 32 pixels are upsampled first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adaattn import StyleSource, adaattn_layer
from .attention import DEFAULT_BUDGET_BYTES, AttentionSpec
from .features import EncodedImage, encode
from .functional import check_finite, crop_padding, pad_to_multiple
from .model import AdaAttNModel
from .sampling import Sampling
from .vgg import VGGEncoder

SIZE_MULTIPLE = 16
MIN_SIZE = 32
STYLE_MIN_SIDE = 32


@dataclass(frozen=True)
class StylizeOptions:
    """How to stylise. ``attention`` None means the family's default variant;
    ``layers`` None means all of the family's layers (the others keep the content)."""

    alpha: float = 1.0
    attention: AttentionSpec | None = None
    sampling: Sampling = field(default_factory=Sampling)
    layers: tuple[str, ...] | None = None
    blend: str = "mix"
    budget_bytes: int = DEFAULT_BUDGET_BYTES

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha (strength) must be in [0, 1], got {self.alpha}")


class Stylizer(nn.Module):
    """An encoder and a family model as one module, to place on a device together."""

    def __init__(self, encoder: VGGEncoder, model: AdaAttNModel) -> None:
        super().__init__()
        self.encoder = encoder
        self.model = model


def check_images(images: Tensor, what: str) -> None:
    """One-line errors for tensors that are not an RGB batch [N,3,H,W] of finite values."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what} must be an RGB batch of shape [N,3,H,W], got {shape}")
    if min(images.shape) == 0:
        raise ValueError(f"{what} is empty (shape {list(images.shape)})")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be a float tensor with values in [0, 1], got {images.dtype}")
    check_finite(images, what)


def model_placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype


def encode_content(encoder: VGGEncoder, images: Tensor, layers: Sequence[str]) -> EncodedImage:
    """Pad ``images`` [N,3,H,W] to a legal size and encode them at ``layers``."""
    check_images(images, "content")
    device, dtype = model_placement(encoder)
    padded, pads = pad_to_multiple(images.to(device=device, dtype=dtype), SIZE_MULTIPLE, MIN_SIZE)
    return encode(encoder, padded, layers, pads=pads, size=tuple(images.shape[-2:]))


def upscale_tiny(images: Tensor, min_side: int = STYLE_MIN_SIDE) -> Tensor:
    """Bicubic-upsample each side shorter than ``min_side`` to ``min_side``."""
    h, w = images.shape[-2:]
    if h >= min_side and w >= min_side:
        return images
    size = (max(h, min_side), max(w, min_side))
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def encode_style(encoder: VGGEncoder, images: Tensor, layers: Sequence[str]) -> EncodedImage:
    """Encode style images [N,3,H,W] at ``layers`` (tiny ones upsampled first)."""
    check_images(images, "style")
    device, dtype = model_placement(encoder)
    return encode(encoder, upscale_tiny(images.to(device=device, dtype=dtype)), layers)


def chosen_layers(model: AdaAttNModel, options: StylizeOptions) -> tuple[tuple[str, ...], AttentionSpec]:
    """The layers to stylise (checked against the family) and the attention to use."""
    layers = model.family.layers if options.layers is None else tuple(options.layers)
    for layer in layers:
        model.projections(layer)  # raises a clear error for a layer this family cannot use
    return layers, options.attention or model.family.attention


def stylize_features(
    model: AdaAttNModel,
    content: EncodedImage,
    sources: Sequence[StyleSource],
    options: StylizeOptions = StylizeOptions(),
    region: Tensor | None = None,
) -> dict[str, Tensor]:
    """AdaAttN at each of the family's layers (content features where a layer is left out).

    ``region`` [1|N,H,W] in [0,1] over the content limits where the style is applied.
    """
    family = model.family
    layers, spec = chosen_layers(model, options)
    out = {}
    for layer in family.layers:
        if layer not in layers:
            out[layer] = content.features[layer]
            continue
        out[layer] = adaattn_layer(
            layer,
            content,
            sources,
            projections=model.projections(layer),
            spec=spec,
            sampling=options.sampling,
            max_sample=family.max_sample[layer],
            blend=options.blend,
            strength=options.alpha,
            region=region,
            budget_bytes=options.budget_bytes,
        )
    return out


def decode_image(model: AdaAttNModel, features: dict[str, Tensor], content: EncodedImage) -> Tensor:
    """Decode and crop back to the content's size: [N,3,H,W], unclamped."""
    return crop_padding(model.decode(features), content.pads)


def stylize(
    model: AdaAttNModel,
    encoder: VGGEncoder,
    content: Tensor,
    styles: Tensor | Sequence[Tensor],
    *,
    weights: Sequence[float] | None = None,
    options: StylizeOptions = StylizeOptions(),
    content_chunk: int = 1,
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Stylise ``content`` [N,3,H,W] (RGB in [0,1]) with one or more styles.

    Each style is [1,3,h,w] (used for every content) or [N,3,h,w] (paired). Several
    styles are blended with ``weights`` (default: equal) by ``options.blend``. Contents
    run ``content_chunk`` at a time; ``callback(done, total)`` follows progress. The
    output [N,3,H,W] has the content's size, on the model's device; it is not clamped.
    """
    if isinstance(styles, Tensor):
        styles = [styles]
    if weights is not None and len(weights) != len(styles):
        raise ValueError(f"{len(weights)} style weights for {len(styles)} styles")
    check_images(content, "content")
    layers = model.family.layers
    encoded = [encode_style(encoder, s, layers) for s in styles]
    for k, e in enumerate(encoded):
        if e.batch not in (1, content.shape[0]):
            raise ValueError(
                f"style {k + 1} has a batch of {e.batch} for {content.shape[0]} contents; "
                "give one style for all contents, or one per content"
            )
    weights = list(weights) if weights is not None else [1.0] * len(styles)
    total = content.shape[0]
    outputs = []
    for start in range(0, total, max(1, content_chunk)):
        stop = min(total, start + max(1, content_chunk))
        sources = [
            StyleSource(e if e.batch == 1 else e.take(slice(start, stop)), weight=w)
            for e, w in zip(encoded, weights)
        ]
        enc = encode_content(encoder, content[start:stop], layers)
        feats = stylize_features(model, enc, sources, options)
        outputs.append(decode_image(model, feats, enc))
        if callback is not None:
            callback(stop, total)
    return torch.cat(outputs)
