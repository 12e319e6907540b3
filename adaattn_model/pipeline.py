"""The one stylisation core: contents and styles in, stylised images out.

The Python API (:func:`stylize`), the ``stylize`` command, the Stylize nodes and the
frame path all run through here, so a setting means the same everywhere: the attention
by the one rule of :func:`~adaattn_model.attention.resolve_attention`, colour modes,
style size, strength, masks and blending by :class:`StylizeOptions`. VGG encodings go
through an :class:`~adaattn_model.encoding_cache.EncodingCache` when one is given (the
:class:`Stylizer` holds one beside its model), so a re-run that changes only what acts
after the encoder (strength, attention, sampling, masks, luminance colour) skips it.

Stages, in order, per chunk of contents: style encodings (recoloured first in ``match``
colour mode), the content's encoding, AdaAttN at each chosen layer, decoding, the
luminance colour step. Each is one :meth:`Progress.step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from .adaattn import StyleSource
from .color import match_color, preserve_luminance
from .detail import restore_detail_
from .encoding_cache import DEFAULT_CACHE_BYTES, EncodingCache
from .features import EncodedImage
from .forecast import encode_units, stylize_units
from .functional import crop_padding, padded_size
from .host_memory import return_freed_memory
from .images import resize_max_side
from .model import AdaAttNModel
from .options import StylizeOptions
from .progress import Progress, expect, step
from .stages import (
    MIN_SIZE,
    SIZE_MULTIPLE,
    STYLE_MIN_SIDE,
    check_images,
    chosen_layers,
    decode_image,
    encode_content,
    encode_style,
    model_placement,
    style_size,
    stylize_features,
    stylize_layer,
    upscale_tiny,
)
from .tiling import stylize_decode_tiled
from .vgg import VGGEncoder

__all__ = [
    "MIN_SIZE", "SIZE_MULTIPLE", "STYLE_MIN_SIDE", "Style", "StylizeOptions", "Stylizer", "check_images",
    "chosen_layers", "decode_image", "encode_content", "encode_style", "model_placement", "style_sources", "stylize",
    "stylize_features", "upscale_tiny",
]  # fmt: skip


@dataclass(frozen=True)
class Style:
    """A style image [1|N,3,h,w] (one for every content, or one per content), its weight
    among the styles, and optionally where it applies: ``region`` [1|N,H,W] in [0,1] over
    the content."""

    image: Tensor
    weight: float = 1.0
    region: Tensor | None = None


class Stylizer(nn.Module):
    """An encoder and a family model as one module, to place on a device together, with the
    cache of their encodings. The cache is emptied when the module moves to another device or
    dtype (as when ComfyUI offloads it) and goes with the module."""

    def __init__(self, encoder: VGGEncoder, model: AdaAttNModel, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        super().__init__()
        self.encoder = encoder
        self.model = model
        self.cache = EncodingCache(cache_bytes)

    def _apply(self, fn, *args, **kwargs):
        before = model_placement(self.encoder)
        out = super()._apply(fn, *args, **kwargs)
        if model_placement(self.encoder) != before:
            self.cache.clear()
        return out

    def stylize(self, content: Tensor, styles, **kwargs) -> Tensor:
        """:func:`stylize` with this module's model, encoder and cache."""
        return stylize(self.model, self.encoder, content, styles, cache=self.cache, **kwargs)


def as_styles(styles: Tensor | Style | Sequence[Tensor | Style], weights: Sequence[float] | None = None) -> list[Style]:
    if isinstance(styles, (Tensor, Style)):
        styles = [styles]
    out = [s if isinstance(s, Style) else Style(s) for s in styles]
    if not out:
        raise ValueError("give at least one style image")
    if weights is not None:
        if len(weights) != len(out):
            raise ValueError(f"{len(weights)} style weights for {len(out)} styles")
        out = [replace(s, weight=float(w)) for s, w in zip(out, weights)]
    return out


def _rows(t: Tensor | None, start: int, stop: int) -> Tensor | None:
    """Rows ``start:stop`` of a paired batch; a batch of 1 is shared by every content."""
    return t if t is None or t.shape[0] == 1 else t[start:stop]


def _check_inputs(content: Tensor, styles: list[Style], mask: Tensor | None) -> None:
    check_images(content, "content")
    n, size = content.shape[0], tuple(content.shape[-2:])
    for k, s in enumerate(styles):
        check_images(s.image, "style" if len(styles) == 1 else f"style {k + 1}")
        if s.image.shape[0] not in (1, n):
            raise ValueError(
                f"style {k + 1} has a batch of {s.image.shape[0]} for {n} contents; "
                "give one style for all contents, or one per content"
            )
        if not s.weight >= 0:
            raise ValueError(f"style {k + 1} has a negative or NaN weight ({s.weight})")
    for what, m in [("content mask", mask)] + [(f"region of style {k + 1}", s.region) for k, s in enumerate(styles)]:
        if m is not None and (m.ndim != 3 or tuple(m.shape[-2:]) != size or m.shape[0] not in (1, n)):
            raise ValueError(f"{what} has shape {list(m.shape)}; expected [1 or {n}, {size[0]}, {size[1]}]")


def _key(cache: EncodingCache | None, role: str, image: Tensor, encoder: VGGEncoder, layers) -> tuple | None:
    return None if cache is None else cache.key(role, image, layers, encoder)


def _encoded(
    cache: EncodingCache | None,
    key: tuple | None,
    role: str,
    image: Tensor,
    encoder: VGGEncoder,
    layers,
    tile: int | None = None,
    progress: Progress | None = None,
) -> EncodedImage:
    """``image`` (on the encoder's device and dtype) encoded as content (in tiles of ``tile``
    pixels when given) or style, through ``cache`` under ``key``. Tiled and untiled encodings
    are the same encoding, so they share a key."""

    def run() -> EncodedImage:
        if role == "content":
            return encode_content(encoder, image, layers, tile=tile, progress=progress)
        return encode_style(encoder, image, layers, progress=progress)

    if cache is None:
        return run()
    return cache.get_or_encode(key, run)


def _cached(cache: EncodingCache | None, key: tuple | None) -> bool:
    return cache is not None and key in cache


def stylize(
    model: AdaAttNModel,
    encoder: VGGEncoder,
    content: Tensor,
    styles: Tensor | Style | Sequence[Tensor | Style],
    *,
    weights: Sequence[float] | None = None,
    mask: Tensor | None = None,
    options: StylizeOptions = StylizeOptions(),
    content_chunk: int = 1,
    cache: EncodingCache | None = None,
    progress: Progress | None = None,
    callback: Callable[[int, int], None] | None = None,
    output_device: torch.device | str | None = None,
) -> Tensor:
    """Stylise ``content`` [N,3,H,W] (RGB in [0,1]) with one or more styles.

    Each style (a tensor or a :class:`Style`) is [1,3,h,w] (used for every content) or
    [N,3,h,w] (paired); several are blended with their weights (``weights`` overrides
    them; default equal) by ``options.blend``, each where its region allows. ``mask``
    [1|N,H,W] in [0,1] limits where the content is stylised. Contents run
    ``content_chunk`` at a time; ``callback(done, total)`` after each chunk, ``progress``
    after each stage. Encodings are looked up in and added to ``cache`` when given.

    Returns float32 [N,3,H,W] at the content's size, on ``output_device`` (default: the
    model's device), not clamped (the ``luminance`` colour step clamps the decoded image
    before it takes the content's chroma, as every caller saves or shows clamped images).
    """
    styles = as_styles(styles, weights)
    _check_inputs(content, styles, mask)
    device, dtype = model_placement(encoder)
    family_layers = model.family.layers
    layers, spec = chosen_layers(model, options)
    detail = options.detail_for(model.family)
    total, chunk = content.shape[0], max(1, content_chunk)
    n_chunks = math.ceil(total / chunk)
    images = [resize_max_side(s.image, options.style_max_side) for s in styles]
    match = options.color == "match"
    per_chunk = [match or im.shape[0] > 1 for im in images]  # styles encoded again for each chunk
    expect(progress, sum(n_chunks if again else 1 for again in per_chunk))
    expect(progress, n_chunks * (len(layers) + 2 + (options.color != "none")))
    shared: dict[int, EncodedImage] = {}
    outputs = []
    with torch.no_grad():
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            rgb = content[start:stop].to(device=device, dtype=torch.float32)
            to_encode = {}  # style index -> (the image as the encoder takes it, its cache key)
            for k, image in enumerate(images):
                if k not in shared:
                    style = _rows(image, start, stop).to(device=device, dtype=torch.float32)
                    if match:  # the recoloured style depends on the content
                        style = match_color(style.expand(rgb.shape[0], -1, -1, -1), rgb)
                    style = style.to(dtype)
                    to_encode[k] = style, _key(cache, "style", style, encoder, family_layers)
            height, width = (padded_size(n, SIZE_MULTIPLE, MIN_SIZE) for n in rgb.shape[-2:])
            tile = options.tile_for(height, width, model.family, device, batch=rgb.shape[0])
            content_image = rgb.to(dtype)
            content_key = _key(cache, "content", content_image, encoder, family_layers)
            if progress is not None:  # the stages' own steps, so the bar's total is right from here on
                before = progress.reserved
                progress.reserve_at_least(
                    stylize_units(model, (height, width), rgb.shape[0], layers,
                                  [style_size(*im.shape[-2:]) for im in images], options.sampling,
                                  options.blend, options.budget(device), tile, device)
                    + sum(encode_units(encoder, (im.shape[0], 3, *style_size(*im.shape[-2:])), family_layers, None,
                                       device) for im, key in to_encode.values() if not _cached(cache, key))
                    + (0 if _cached(cache, content_key) else
                       encode_units(encoder, (rgb.shape[0], 3, height, width), family_layers, tile, device))
                )  # fmt: skip
            sources = []
            for k, s in enumerate(styles):
                style_code = shared.get(k)
                if style_code is None:
                    image, key = to_encode[k]
                    style_code = _encoded(cache, key, "style", image, encoder, family_layers, progress=progress)
                    if not per_chunk[k]:
                        shared[k] = style_code
                    step(progress)
                sources.append(StyleSource(style_code, s.weight, _rows(s.region, start, stop)))
            if match:
                step(progress)  # the colour step: styles recoloured to this chunk's contents
            encoded = _encoded(cache, content_key, "content", content_image, encoder, family_layers, tile, progress)
            step(progress)
            return_freed_memory(device)  # the encoders' activations, before the attention's blocks
            region = _rows(mask, start, stop)
            if tile is None:
                features = dict(encoded.features)
                del style_code
                if stop == total:
                    shared.clear()
                for layer in layers:
                    features[layer] = stylize_layer(model, layer, encoded, sources, options, spec, region, progress)
                    # A layer's keys and style values are not needed by the next layers nor the decoder:
                    # unless a cache or the next chunk keeps them, they go now (a 1024x1024 content and style
                    # hold about 0.5 GB of them).
                    encoded = encoded.without(layer)
                    sources = [replace(source, style=source.style.without(layer)) for source in sources]
                    step(progress)
                pads = encoded.pads
                del encoded, sources
                return_freed_memory(device)  # before the decoder's full-size maps
                out = crop_padding(model.decode(features, progress=progress), pads).float()
            else:  # AdaAttN and the decoder tile by tile (exact; see tiling.py)
                out = stylize_decode_tiled(
                    model, encoded, sources, layers=layers, spec=spec, sampling=options.sampling,
                    blend=options.blend, strength=options.alpha, budget_bytes=options.budget(device), tile=tile,
                    region=region, progress=progress,
                )  # fmt: skip
                out = crop_padding(out, encoded.pads).float()
                step(progress, len(layers))
            step(progress)
            if detail:
                out = restore_detail_(out, rgb, detail)  # in place: no second full-size image
            if options.color == "luminance":
                out = preserve_luminance(out.clamp(0, 1), rgb)
                step(progress)
            if progress is not None and progress.reserved > before:  # a forecast that was too high
                progress.release(progress.reserved - before)
            outputs.append(out if output_device is None else out.to(output_device))
            if callback is not None:
                callback(stop, total)
    return torch.cat(outputs)


def style_sources(
    model: AdaAttNModel,
    encoder: VGGEncoder,
    styles: Tensor | Style | Sequence[Tensor | Style],
    options: StylizeOptions = StylizeOptions(),
    *,
    cache: EncodingCache | None = None,
    progress: Progress | None = None,
) -> list[StyleSource]:
    """Styles of batch 1 encoded as the core encodes them (resized, through ``cache``), for the
    frame path. The ``match`` colour mode needs each content, so it is not available here."""
    if options.color == "match":
        raise ValueError("the match colour mode recolours the style for each content; use stylize()")
    styles = as_styles(styles)
    device, dtype = model_placement(encoder)
    expect(progress, len(styles))
    out = []
    with torch.no_grad():
        for k, s in enumerate(styles):
            check_images(s.image, "style" if len(styles) == 1 else f"style {k + 1}")
            if s.image.shape[0] != 1:
                raise ValueError(f"style {k + 1} has a batch of {s.image.shape[0]}; the frame path takes one image")
            image = resize_max_side(s.image, options.style_max_side).to(device=device, dtype=dtype)
            key = _key(cache, "style", image, encoder, model.family.layers)
            code = _encoded(cache, key, "style", image, encoder, model.family.layers, progress=progress)
            out.append(StyleSource(code, s.weight, s.region))
            step(progress)
    return out
