"""The frozen VGG-19 encoder ("vgg_normalised" of AdaIN), with named layers and taps.

The reference keeps it as one ``nn.Sequential`` of 53 children cut by index; here each
conv has its VGG name (``conv3_1`` ...) and the taps relu1_1 .. relu5_1 are named stages.
The index-to-name table lives once, in :mod:`adaattn_model.convert`.
Input is RGB in [0, 1]: the first 1x1 conv (``preprocess``) does the colour/mean change.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from . import banded
from .progress import Progress, expect

TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

# (conv name, in channels, out channels) for the convs up to conv5_1, in order.
# conv5_2..conv5_4 exist in the released file but never feed a tap, so they are not kept.
VGG_CONVS = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("conv5_1", 512, 512),
)  # fmt: skip

# What runs between two taps: convs (each followed by ReLU) and "pool" (2x2, stride 2, ceil).
STAGES = {
    "relu1_1": ("preprocess", "conv1_1"),
    "relu2_1": ("conv1_2", "pool", "conv2_1"),
    "relu3_1": ("conv2_2", "pool", "conv3_1"),
    "relu4_1": ("conv3_2", "conv3_3", "conv3_4", "pool", "conv4_1"),
    "relu5_1": ("conv4_2", "conv4_3", "conv4_4", "pool", "conv5_1"),
}


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 conv preceded by 1-pixel reflection padding (the padding is part of the conv)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect")


def _pooled(ops: tuple[str, ...]) -> Iterator[tuple[str, bool]]:
    """``(op, pooled)`` for the ops of a stage, a "pool" folded into the conv before it (every pool
    follows a conv), so the conv's full-size output is pooled band by band."""
    for i, op in enumerate(ops):
        if op != "pool":
            yield op, i + 1 < len(ops) and ops[i + 1] == "pool"


class VGGEncoder(nn.Module):
    """VGG-19 up to relu5_1; frozen. Call :meth:`taps` to run it."""

    def __init__(self) -> None:
        super().__init__()
        self.preprocess = nn.Conv2d(3, 3, 1)
        for name, cin, cout in VGG_CONVS:
            self.add_module(name, conv3x3(cin, cout))
        self.requires_grad_(False)

    def stages(
        self, image: Tensor, upto: str = "relu5_1", *, progress: Progress | None = None
    ) -> Iterator[tuple[str, Tensor]]:
        """Yield ``(tap name, feature)`` for relu1_1 .. ``upto`` in order.

        A generator, so a caller can keep what it needs of a large early tap and let
        the rest go before the next stage runs. ``progress`` steps once per layer (per
        band of rows of a large layer, :mod:`adaattn_model.banded`).
        """
        if upto not in STAGES:
            raise ValueError(f"unknown VGG tap {upto!r}; expected one of {', '.join(TAPS)}")
        if progress is not None:
            expect(progress, self.units(tuple(image.shape), upto, image.device))
        x = image
        for tap, ops in STAGES.items():
            for op, pool in _pooled(ops):
                if op == "preprocess":
                    x = banded.pointwise(self.preprocess, x, progress)
                else:
                    x = banded.conv3x3(getattr(self, op), x, relu=True, pool=pool, progress=progress)
            yield tap, x
            if tap == upto:
                return

    def units(self, shape: tuple[int, ...], upto: str, device: torch.device) -> int:
        """Progress steps of :meth:`stages` for an image batch of ``shape`` [N,3,H,W] on ``device``."""
        n, c, h, w = shape
        channels = {name: cout for name, _, cout in VGG_CONVS}
        units, size = 0, self.conv1_1.weight.element_size()  # the maps have the weights' dtype
        for tap, ops in STAGES.items():
            for op, pool in _pooled(ops):
                if op == "preprocess":
                    units += banded.band_count(h, banded.map_row_work((n, c, h, w)), device)
                    continue
                units += banded.conv_units((n, c, h, w), channels[op], device, pool=pool, element_size=size)
                c = channels[op]
                if pool:
                    h, w = (h + 1) // 2, (w + 1) // 2
            if tap == upto:
                return units
        return units

    def taps(self, image: Tensor, upto: str = "relu5_1", *, progress: Progress | None = None) -> dict[str, Tensor]:
        """All taps relu1_1 .. ``upto`` of ``image`` [N,3,H,W] (RGB in [0, 1])."""
        return dict(self.stages(image, upto, progress=progress))
