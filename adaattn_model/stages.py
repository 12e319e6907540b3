"""The stages of one stylisation, each a pure function: encode, AdaAttN per layer, decode.

Any content size works: the content is reflect-padded to a multiple of 16 (at least 32,
so relu5_1 is 2x2 or more) and the output cropped back, so the result always has the
input's size. Styles of any size work; sides under 32 pixels are upsampled first.
:func:`adaattn_model.pipeline.stylize` runs these stages; the composable nodes call
them one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .adaattn import StyleSource, adaattn_layer
from .attention import AttentionSpec
from .features import EncodedImage, encode
from .functional import check_finite, crop_padding, pad_to_multiple
from .model import AdaAttNModel
from .options import StylizeOptions
from .progress import Progress
from .tiling import encode_tiled
from .vgg import VGGEncoder

SIZE_MULTIPLE = 16
MIN_SIZE = 32
STYLE_MIN_SIDE = 32


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


def encode_content(
    encoder: VGGEncoder,
    images: Tensor,
    layers: Sequence[str],
    *,
    tile: int | None = None,
    progress: Progress | None = None,
) -> EncodedImage:
    """Pad ``images`` [N,3,H,W] to a legal size and encode them at ``layers`` (in tiles of
    ``tile`` pixels when given: the same encoding, in memory bounded by the tile)."""
    check_images(images, "content")
    device, dtype = model_placement(encoder)
    padded, pads = pad_to_multiple(images.to(device=device, dtype=dtype), SIZE_MULTIPLE, MIN_SIZE)
    size = tuple(images.shape[-2:])
    if tile:
        return encode_tiled(encoder, padded, layers, tile, pads=pads, size=size, progress=progress)
    return encode(encoder, padded, layers, pads=pads, size=size, progress=progress)


def style_size(height: int, width: int, min_side: int = STYLE_MIN_SIDE) -> tuple[int, int]:
    """The size a style of ``height x width`` is encoded at (:func:`upscale_tiny`)."""
    return max(height, min_side), max(width, min_side)


def upscale_tiny(images: Tensor, min_side: int = STYLE_MIN_SIDE) -> Tensor:
    """Bicubic-upsample each side shorter than ``min_side`` to ``min_side``."""
    size = style_size(*images.shape[-2:], min_side)
    if size == tuple(images.shape[-2:]):
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def encode_style(
    encoder: VGGEncoder, images: Tensor, layers: Sequence[str], *, progress: Progress | None = None
) -> EncodedImage:
    """Encode style images [N,3,H,W] at ``layers`` (tiny ones upsampled first); ``progress`` as in
    :func:`~adaattn_model.features.encode`."""
    check_images(images, "style")
    device, dtype = model_placement(encoder)
    return encode(encoder, upscale_tiny(images.to(device=device, dtype=dtype)), layers, progress=progress)


def chosen_layers(model: AdaAttNModel, options: StylizeOptions) -> tuple[tuple[str, ...], AttentionSpec]:
    """The layers to stylise (checked against the family) and the attention to use."""
    layers = model.family.layers if options.layers is None else tuple(options.layers)
    for layer in layers:
        model.projections(layer)  # raises a clear error for a layer this family cannot use
    return layers, options.spec_for(model.family)


def stylize_layer(
    model: AdaAttNModel,
    layer: str,
    content: EncodedImage,
    sources: Sequence[StyleSource],
    options: StylizeOptions,
    spec: AttentionSpec,
    region: Tensor | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """AdaAttN at one of the family's layers, with the options' strength, sampling and budget."""
    feature = content.features[layer]
    return adaattn_layer(
        layer,
        content,
        sources,
        projections=model.projections(layer),
        spec=spec,
        sampling=options.sampling,
        max_sample=model.family.max_sample[layer],
        blend=options.blend,
        strength=options.alpha,
        region=region,
        budget_bytes=options.budget(feature.device),
        progress=progress,
    )


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
    layers, spec = chosen_layers(model, options)
    return {
        layer: stylize_layer(model, layer, content, sources, options, spec, region)
        if layer in layers
        else content.features[layer]
        for layer in model.family.layers
    }


def decode_image(
    model: AdaAttNModel, features: dict[str, Tensor], content: EncodedImage, progress: Progress | None = None
) -> Tensor:
    """Decode and crop back to the content's size: [N,3,H,W], unclamped."""
    return crop_padding(model.decode(features, progress=progress), content.pads)
