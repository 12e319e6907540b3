"""Encoded images: the VGG features and attention keys AdaAttN needs, and nothing larger.

The key of layer L concatenates, shallow first and L's own feature last, the
mean-variance-normalised taps relu1_1 .. L, each resized to L's size with legacy
``nearest`` *before* its normalisation (spec section 3). Only these key parts are kept
of the large early taps, so an encoded 2K image holds tens of MB, not GBs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .functional import check_finite, mean_variance_norm, nearest_resize, vgg_sizes
from .progress import Progress
from .vgg import TAPS, VGGEncoder

ATTENTION_LAYERS = ("relu3_1", "relu4_1", "relu5_1")

# Channels of each VGG tap, and of each layer's key (the sum of the taps up to it).
TAP_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
KEY_CHANNELS = {
    layer: sum(TAP_CHANNELS[t] for t in TAPS[: TAPS.index(layer) + 1]) for layer in ATTENTION_LAYERS
}  # relu3_1: 448, relu4_1: 960, relu5_1: 1472


@dataclass(frozen=True)
class EncodedImage:
    """VGG features and keys of a batch of images at some attention layers.

    ``features[L]`` is the raw relu feature [N,C,h,w]; ``keys[L]`` its key [N,Ck,h,w].
    ``size`` is the image size before padding, ``pads`` the reflection padding
    (top, bottom, left, right) that was added to reach a size the decoder accepts.
    """

    features: dict[str, Tensor]
    keys: dict[str, Tensor]
    size: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def batch(self) -> int:
        return next(iter(self.features.values())).shape[0]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(layer for layer in ATTENTION_LAYERS if layer in self.features)

    def take(self, index: int | slice) -> EncodedImage:
        """The batch element(s) ``index`` (a view, no copy)."""
        sel = slice(index, index + 1) if isinstance(index, int) else index
        return EncodedImage(
            {k: v[sel] for k, v in self.features.items()},
            {k: v[sel] for k, v in self.keys.items()},
            self.size,
            self.pads,
        )

    def without(self, layer: str) -> EncodedImage:
        """The same encoding less ``layer``'s feature and key (the object itself is not changed)."""
        return EncodedImage(
            {k: v for k, v in self.features.items() if k != layer},
            {k: v for k, v in self.keys.items() if k != layer},
            self.size,
            self.pads,
        )

    @staticmethod
    def cat(parts: Sequence[EncodedImage]) -> EncodedImage:
        """Join batches encoded at the same layers and size."""
        first = parts[0]
        if len(parts) == 1:
            return first
        return EncodedImage(
            {k: torch.cat([p.features[k] for p in parts]) for k in first.features},
            {k: torch.cat([p.keys[k] for p in parts]) for k in first.keys},
            first.size,
            first.pads,
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> EncodedImage:
        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if dtype is not None else t.dtype)

        return EncodedImage(
            {k: move(v) for k, v in self.features.items()},
            {k: move(v) for k, v in self.keys.items()},
            self.size,
            self.pads,
        )


def encode(
    encoder: VGGEncoder,
    image: Tensor,
    layers: Sequence[str] = ATTENTION_LAYERS,
    *,
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    size: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> EncodedImage:
    """Encode ``image`` [N,3,H,W] (RGB in [0,1], already padded if needed) at ``layers``.

    ``size`` and ``pads`` are only recorded, for cropping after decoding. ``progress``
    steps per VGG layer (:meth:`VGGEncoder.stages`).
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an image batch of shape [N,3,H,W], got {list(image.shape)}")
    check_finite(image, "image")
    layers = tuple(layer for layer in ATTENTION_LAYERS if layer in set(layers))
    if not layers:
        raise ValueError(f"no attention layer requested; expected some of {', '.join(ATTENTION_LAYERS)}")
    h, w = image.shape[-2:]
    if size is None:
        size = (h - pads[0] - pads[1], w - pads[2] - pads[3])
    taps = encoder.stages(image, upto=layers[-1], progress=progress)
    return from_taps(taps, (h, w), layers, size=size, pads=pads)


def from_taps(
    taps: Iterable[tuple[str, Tensor]],
    image_size: tuple[int, int],
    layers: Sequence[str],
    *,
    size: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> EncodedImage:
    """Build an :class:`EncodedImage` from VGG taps ``(name, feature)`` in order relu1_1, ...

    Keeps only the key parts of early taps, so ``taps`` can be a generator.
    """
    sizes = vgg_sizes(*image_size)
    parts: dict[str, list[Tensor]] = {layer: [] for layer in layers}
    features: dict[str, Tensor] = {}
    for tap, feat in taps:
        for layer in layers:
            if TAPS.index(tap) <= TAPS.index(layer):
                parts[layer].append(mean_variance_norm(nearest_resize(feat, sizes[layer])))
        if tap in parts:
            features[tap] = feat
    keys = {layer: torch.cat(p, dim=1) for layer, p in parts.items()}
    return EncodedImage(features, keys, size, pads)
