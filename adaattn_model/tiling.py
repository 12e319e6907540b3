"""Exact tiling of the convolutional stages: images of any size in bounded memory.

What grows with an image is the full-resolution activations of the VGG and the decoder
(a 64-channel float32 map is 1 GiB at 2048x2048). Both run here tile by tile, with the same
result as untiled, to float32 round-off:

* Every 3x3 conv pads by reflection, so a cut through an image spoils a border of the
  tile's activations that widens with each conv (by the conv's stride in pixels) and is
  rounded up by each pooling. A halo at least that wide around each tile, cropped away
  afterwards, leaves every kept position as it is untiled (:data:`ENCODER_HALO`,
  :data:`DECODER_HALO`, derived below; the tests show a narrower halo fails).
* Tile corners sit on multiples of 16 pixels, the stride of relu5_1, so pooling and the
  legacy nearest resize of the keys pick the same pixels as untiled.
* What the encoder keeps is small: the features and keys at the attention layers (1/16 of
  the pixels at relu3_1, 1/64 at relu4_1). :func:`encode_tiled` writes each tile's part
  into full-size tensors and normalises the key parts afterwards, with statistics over
  the whole image, so it returns the very :class:`EncodedImage` the untiled encoder
  gives; the memory-bounded attention then runs on it as usual, against the one style
  bank, and :func:`decode_tiled` decodes the stylised features tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .adaattn import StyleSource, apply_statistics, attention_statistics
from .attention import AttentionSpec
from .features import ATTENTION_LAYERS, KEY_CHANNELS, TAP_CHANNELS, EncodedImage
from .functional import calc_mean_std, reflect_pad
from .model import AdaAttNModel
from .progress import Progress, expect, step
from .sampling import Sampling
from .vgg import TAPS, VGGEncoder

ALIGN = 16  # stride of relu5_1: tile corners on this grid keep pooling and key resizing aligned
SCALE = {tap: 2**i for i, tap in enumerate(TAPS)}  # pixels per position at each tap

# Border spoiled by a cut, in image pixels: a conv at stride s adds s; a 2x2 pool from
# stride s rounds the border up to a multiple of 2s. Up to relu3_1: 1, 2 | pool 2 | 4, 6 |
# pool 8 | 12. relu4_1: 24 | pool 24 | 32. relu5_1: 56 | pool 64 | 80. Rounded up to ALIGN.
ENCODER_HALO = {"relu3_1": 16, "relu4_1": 32, "relu5_1": 80}
# Decoders, from their deepest input: fusion conv (stride 8) 8, conv4_1 16, up, four convs
# at stride 4 32, up, two at 2 36, up, two at 1 38 (image model); less for the others.
DECODER_HALO = 48


@dataclass(frozen=True)
class Box:
    """Rows ``y0:y1`` and columns ``x0:x1`` of the padded image, in pixels."""

    y0: int
    y1: int
    x0: int
    x1: int

    def grow(self, margin: int, height: int, width: int) -> Box:
        return Box(max(0, self.y0 - margin), min(height, self.y1 + margin),
                   max(0, self.x0 - margin), min(width, self.x1 + margin))  # fmt: skip

    def at(self, scale: int) -> tuple[slice, slice]:
        """This box at a tap of ``scale`` pixels per position (corners are multiples of it)."""
        return slice(self.y0 // scale, self.y1 // scale), slice(self.x0 // scale, self.x1 // scale)

    def within(self, outer: Box, scale: int = 1) -> tuple[slice, slice]:
        """This box inside ``outer``'s own tensor at ``scale``."""
        return (slice((self.y0 - outer.y0) // scale, (self.y1 - outer.y0) // scale),
                slice((self.x0 - outer.x0) // scale, (self.x1 - outer.x0) // scale))  # fmt: skip


def tiles(height: int, width: int, tile: int) -> Iterator[Box]:
    """Boxes of ``tile`` x ``tile`` pixels (smaller at the ends) covering a padded image."""
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            yield Box(y, min(height, y + tile), x, min(width, x + tile))


def min_tile(family_layers: Sequence[str]) -> int:
    """The smallest sensible tile for a family: its widest halo (a smaller tile is still exact, but
    computes its halo many times over)."""
    deepest = next(layer for layer in reversed(ATTENTION_LAYERS) if layer in family_layers)
    return max(DECODER_HALO, ENCODER_HALO[deepest])


def untileable_bytes(height: int, width: int, family_layers: Sequence[str], element_bytes: int = 4) -> int:
    """What a tiled run still holds for the whole padded image: the features and keys at the
    attention layers, and the input and output images."""
    return (kept_elements(height * width, family_layers) + 2 * 3 * height * width) * element_bytes


def check_tile(tile: int) -> int:
    """``tile`` itself when it is a legal tile size, else a one-line error."""
    if tile < ALIGN or tile % ALIGN:
        raise ValueError(f"tile size must be a multiple of {ALIGN} pixels and at least {ALIGN}, got {tile}")
    return tile


def _check_padded(height: int, width: int) -> tuple[int, int]:
    if height % ALIGN or width % ALIGN:
        raise ValueError(
            f"tiling needs a padded content of a multiple of {ALIGN} pixels per side, got {height}x{width}"
        )
    return height, width


def encode_tiled(
    encoder: VGGEncoder,
    padded: Tensor,
    layers: Sequence[str],
    tile: int,
    *,
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    size: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> EncodedImage:
    """What :func:`features.encode` returns for ``padded`` [N,3,H,W] (H, W multiples of 16),
    computed ``tile`` x ``tile`` pixels at a time; ``pads`` and ``size`` are recorded as there."""
    check_tile(tile)
    height, width = _check_padded(*padded.shape[-2:])
    layers = tuple(layer for layer in ATTENTION_LAYERS if layer in set(layers))
    deepest, halo = layers[-1], ENCODER_HALO[layers[-1]]
    n = padded.shape[0]
    # keys[L] holds the raw taps relu1_1 .. L resized to L's grid, normalised once all tiles are in.
    keys = {layer: padded.new_empty(n, KEY_CHANNELS[layer], height // SCALE[layer], width // SCALE[layer])
            for layer in layers}  # fmt: skip
    boxes = list(tiles(height, width, tile))
    expect(progress, len(boxes))
    for box in boxes:
        outer = box.grow(halo, height, width)
        offsets = dict.fromkeys(layers, 0)
        tile_image = padded[..., outer.y0 : outer.y1, outer.x0 : outer.x1]
        for tap, feature in encoder.stages(tile_image, upto=deepest, progress=progress):
            rows, cols = box.within(outer, SCALE[tap])
            kept = feature[..., rows, cols]
            for layer in layers:
                if TAPS.index(tap) <= TAPS.index(layer):
                    f = SCALE[layer] // SCALE[tap]  # legacy nearest resize of an aligned crop: every f-th position
                    at_rows, at_cols = box.at(SCALE[layer])
                    c0 = offsets[layer]
                    keys[layer][:, c0 : c0 + TAP_CHANNELS[tap], at_rows, at_cols] = kept[..., ::f, ::f]
                    offsets[layer] = c0 + TAP_CHANNELS[tap]
            del feature, kept
        step(progress)
    features = {}
    for layer in layers:
        features[layer] = keys[layer][:, KEY_CHANNELS[layer] - TAP_CHANNELS[layer] :].clone()
        c0 = 0
        for tap in TAPS[: TAPS.index(layer) + 1]:
            part = keys[layer][:, c0 : c0 + TAP_CHANNELS[tap]]
            mean, std = calc_mean_std(part)
            part.sub_(mean).div_(std)  # in place: the mean-variance norm of the whole image's part
            c0 += TAP_CHANNELS[tap]
    if size is None:
        size = (height - pads[0] - pads[1], width - pads[2] - pads[3])
    return EncodedImage(features, keys, size, pads)


def decode_tiled(
    model: AdaAttNModel, features: Mapping[str, Tensor], tile: int, *, progress: Progress | None = None
) -> Tensor:
    """What ``model.decode(features)`` returns [N,3,H,W], decoded ``tile`` x ``tile`` pixels at a time
    (H, W: 16 times the relu5_1 grid; multiples of 16)."""
    check_tile(tile)
    start = model.family.layers[0]
    ref = features[start]
    height, width = _check_padded(ref.shape[-2] * SCALE[start], ref.shape[-1] * SCALE[start])
    out = ref.new_empty(ref.shape[0], 3, height, width)
    boxes = list(tiles(height, width, tile))
    expect(progress, len(boxes))
    for box in boxes:
        inner = box.grow(DECODER_HALO, height, width)
        crops = {layer: f[(..., *inner.at(SCALE[layer]))] for layer, f in features.items()}
        decoded = model.decode(crops, progress=progress)
        out[..., box.y0 : box.y1, box.x0 : box.x1] = decoded[(..., *box.within(inner))]
        del decoded, crops
        step(progress)
    return out


def stylize_decode_tiled(
    model: AdaAttNModel,
    content: EncodedImage,
    sources: Sequence[StyleSource],
    *,
    layers: Sequence[str],
    spec: AttentionSpec,
    sampling: Sampling,
    blend: str,
    strength: float,
    budget_bytes: int,
    tile: int,
    region: Tensor | None = None,
    progress: Progress | None = None,
) -> Tensor:
    """AdaAttN at ``layers`` and decoding, ``tile`` x ``tile`` pixels at a time: what
    ``decode(stylize_features(content))`` gives, padded size [N,3,H,W].

    AdaAttN acts on each content position alone, given its key and the content feature's
    mean and std over the whole image (taken once here), so a tile's positions need nothing
    from other tiles; the decoder then needs a halo of stylised positions around the tile.
    ``region`` [1|N,h,w] (the content mask) and the sources' regions are at the unpadded
    size, as everywhere; they are reflect-padded like the content and cropped per tile.
    """
    check_tile(tile)
    start = model.family.layers[0]
    ref = content.features[start]
    height, width = _check_padded(ref.shape[-2] * SCALE[start], ref.shape[-1] * SCALE[start])
    pads, full = content.pads, Box(0, height, 0, width)
    normalization = {layer: calc_mean_std(content.features[layer].float()) for layer in layers}
    region_padded = _pad_map(region, pads)
    source_regions = [_pad_map(s.region, pads) for s in sources]
    out = ref.new_empty(ref.shape[0], 3, height, width)
    boxes = list(tiles(height, width, tile))
    expect(progress, len(boxes) * (2 * len(layers) + 1))
    for box in boxes:
        inner = box.grow(DECODER_HALO, height, width)
        rows, cols = inner.within(full)
        part = EncodedImage(
            {layer: f[(..., *inner.at(SCALE[layer]))] for layer, f in content.features.items()},
            {layer: k[(..., *inner.at(SCALE[layer]))] for layer, k in content.keys.items()},
            (inner.y1 - inner.y0, inner.x1 - inner.x0),
        )
        part_sources = [StyleSource(s.style, s.weight, r[:, rows, cols] if r is not None else None, s.mask)
                        for s, r in zip(sources, source_regions)]  # fmt: skip
        part_region = region_padded[:, rows, cols] if region_padded is not None else None
        features = dict(part.features)
        for layer in layers:
            stats = attention_statistics(
                layer, part, part_sources, projections=model.projections(layer), spec=spec, sampling=sampling,
                max_sample=model.family.max_sample[layer], blend=blend, budget_bytes=budget_bytes, progress=progress,
            )  # fmt: skip
            step(progress)  # the statistics and their application are each a pass over the tile's layer
            features[layer] = apply_statistics(
                part.features[layer], stats, strength=strength, region=part_region, normalization=normalization[layer]
            )
            del stats
            step(progress)
        decoded = model.decode({layer: features[layer] for layer in model.family.layers}, progress=progress)
        out[..., box.y0 : box.y1, box.x0 : box.x1] = decoded[(..., *box.within(inner))]
        del decoded, features, part
        step(progress)
    return out


def _pad_map(m: Tensor | None, pads: tuple[int, int, int, int]) -> Tensor | None:
    """A map [N,h,w] over the unpadded content, reflect-padded like the content: [N,H,W]."""
    return None if m is None else reflect_pad(m[:, None].float(), *pads)[:, 0]


def estimated_peak_bytes(height: int, width: int, family_layers: Sequence[str], element_bytes: int = 4) -> int:
    """Rough peak of an untiled run's activations for a padded content of ``height x width``:
    two 64-channel maps at full size (a conv reads one and writes the next) plus the kept
    features and keys of the attention layers."""
    pixels = height * width
    return (2 * 64 * pixels + kept_elements(pixels, family_layers)) * element_bytes


def kept_elements(pixels: int, family_layers: Sequence[str]) -> int:
    """Elements of the features and keys kept at the attention layers for ``pixels`` pixels."""
    return sum((TAP_CHANNELS[layer] + KEY_CHANNELS[layer]) * pixels // SCALE[layer] ** 2 for layer in family_layers)


CPU_MEMORY_LIMIT = 2 * 2**30


def memory_limit(device: torch.device, free_bytes: int | None = None) -> int:
    """Activation memory an untiled run may take before tiling turns on: on a GPU half of its
    free memory, elsewhere 2 GiB (a 1024x1024 run stays untiled; 2048x2048 and larger tile)."""
    if device.type != "cuda":
        return CPU_MEMORY_LIMIT
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return max(256 * 2**20, free_bytes // 2)


def choose_tile(height: int, width: int, family_layers: Sequence[str], limit_bytes: int) -> int | None:
    """None when an untiled run's activations fit ``limit_bytes``; else the largest aligned tile
    (halving from the whole image, at least 256 pixels) whose halo-grown activations fit it.
    What the encoder keeps of the whole image (:func:`kept_elements`) comes on top either way."""
    if estimated_peak_bytes(height, width, family_layers) <= limit_bytes:
        return None
    grown = 2 * (DECODER_HALO + ENCODER_HALO[family_layers[-1]])
    tile = ALIGN * math.ceil(max(height, width) / ALIGN)
    while tile > 256 and estimated_peak_bytes(tile + grown, tile + grown, family_layers) > limit_bytes:
        tile = max(256, tile // 2 // ALIGN * ALIGN)
    return tile
