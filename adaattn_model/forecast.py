"""How many progress steps a stylisation will take, so a bar's total is right before the work starts.

Each stage announces its own steps when it starts (:meth:`Progress.expect`); without a forecast
a bar's total would grow stage by stage and its fraction jump back. The core reserves what the
stages below will announce (:meth:`Progress.reserve`), counted here from the same plans they
follow: the VGG's and decoders' layers and row bands, the tiles, the attention kernel's blocks.
What it cannot foresee (an out-of-memory retry, the fused GPU kernel's blocks, a style region
that leaves a bank unused) only makes the total grow or the bar end with a step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .attention import planned_blocks
from .features import ATTENTION_LAYERS, KEY_CHANNELS, TAP_CHANNELS
from .functional import vgg_sizes
from .model import AdaAttNModel
from .sampling import Sampling
from .tiling import DECODER_HALO, ENCODER_HALO, SCALE, tiles
from .vgg import VGGEncoder


def encode_units(
    encoder: VGGEncoder, shape: tuple[int, int, int, int], layers: Sequence[str], tile: int | None, device: torch.device
) -> int:
    """Steps of encoding an image batch of ``shape`` [N,3,H,W] at ``layers`` (in tiles of ``tile``)."""
    deepest = [layer for layer in ATTENTION_LAYERS if layer in layers][-1]
    if not tile:
        return encoder.units(shape, deepest, device)
    n, _, height, width = shape
    units = 0
    for box in tiles(height, width, tile):
        grown = box.grow(ENCODER_HALO[deepest], height, width)
        units += encoder.units((n, 3, grown.y1 - grown.y0, grown.x1 - grown.x0), deepest, device) + 1
    return units


def style_columns(style_shape: tuple[int, int], layer: str, sampling: Sampling, max_sample: int) -> int:
    """Style positions one bank holds at ``layer`` for a style image of ``style_shape`` (H, W)."""
    h, w = vgg_sizes(*style_shape)[layer]  # VGG pools round up
    positions = h * w
    return positions if sampling.mode == "exact" else min(positions, max_sample)


def attention_units(
    layer: str, rows: int, bank_cols: Sequence[int], blend: str, budget_bytes: int, device: torch.device
) -> int:
    """Steps of the attention kernel for ``rows`` content positions of one image at ``layer``."""
    work = KEY_CHANNELS[layer] + 2 * TAP_CHANNELS[layer]  # as the kernel counts a logit: q.k and [v, v**2]
    if len(bank_cols) == 1 or blend == "match":
        return planned_blocks(rows, bank_cols, budget_bytes, work, device.type)
    return sum(planned_blocks(rows, [cols], budget_bytes, work, device.type) for cols in bank_cols)


def stylize_units(
    model: AdaAttNModel,
    padded: tuple[int, int],
    batch: int,
    layers: Sequence[str],
    style_shapes: Sequence[tuple[int, int]],
    sampling: Sampling,
    blend: str,
    budget_bytes: int,
    tile: int | None,
    device: torch.device,
    layer_step: int = 1,
) -> int:
    """Steps of AdaAttN at ``layers`` and decoding for ``batch`` padded contents of ``padded`` (H, W),
    untiled or in tiles of ``tile``, as :func:`~adaattn_model.pipeline.stylize` runs them (not counting
    the core's own steps, which it announces itself). ``layer_step``: the untiled AdaAttN layer's own step
    between its statistics and applying them (the frame path applies them itself: 0)."""
    height, width = padded

    def region_units(h: int, w: int, per_layer_extra: int) -> int:
        units = model.decode_units(batch, h, w, device)
        for layer in layers:
            cols = [style_columns(shape, layer, sampling, model.family.max_sample[layer]) for shape in style_shapes]
            rows = (h // SCALE[layer]) * (w // SCALE[layer])
            units += batch * attention_units(layer, rows, cols, blend, budget_bytes, device) + per_layer_extra
        return units

    if not tile:
        return region_units(height, width, layer_step)
    units = 0
    for box in tiles(height, width, tile):
        grown = box.grow(DECODER_HALO, height, width)
        units += region_units(grown.y1 - grown.y0, grown.x1 - grown.x0, 2) + 1  # per layer and per tile steps
    return units
