"""Decoders (features -> RGB) and the relu4_1 + relu5_1 fusion block.

All three released decoders mirror the encoder, so their convs carry the mirrored VGG
names. They differ only in where they start and whether the relu3_1 AdaAttN output is
concatenated in (the image model's skip connection):

  * image (``official-image``): relu4_1 -> conv4_1 -> up -> concat(., relu3_1 skip) -> conv3_4 (512 in) ...
  * AdaIN (``lite``):           relu4_1 -> conv4_1 -> up -> conv3_4 (256 in) ...
  * video (``official-video``): relu3_1 -> conv3_4 (256 in) ...

Every 3x3 conv has 1-pixel reflection padding; "up" is nearest x2; the output is not clamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import banded
from .progress import Progress, expect
from .vgg import conv3x3

# (conv name, out channels) from relu3_1 down to RGB, with "up" for nearest x2.
TAIL = (("conv3_4", 256), ("conv3_3", 256), ("conv3_2", 256), ("conv3_1", 128), "up",
        ("conv2_2", 128), ("conv2_1", 64), "up", ("conv1_2", 64), ("conv1_1", 3))  # fmt: skip


def upsample2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class Decoder(nn.Module):
    """Decoder starting at ``start`` (``relu4_1`` or ``relu3_1``).

    ``skip_channels`` > 0 adds the relu3_1 skip input (image model: 256).
    """

    def __init__(self, start: str, skip_channels: int = 0) -> None:
        super().__init__()
        if start not in ("relu4_1", "relu3_1"):
            raise ValueError(f"a decoder starts at relu4_1 or relu3_1, not {start!r}")
        self.start = start
        self.skip_channels = skip_channels
        channels = 256
        if start == "relu4_1":
            self.conv4_1 = conv3x3(512, 256)
        channels += skip_channels
        for item in TAIL:
            if item != "up":
                name, out = item
                self.add_module(name, conv3x3(channels, out))
                channels = out

    def forward(self, x: Tensor, skip: Tensor | None = None, *, progress: Progress | None = None) -> Tensor:
        """RGB [N,3,H,W] from the start feature; ``progress`` steps per layer (per band of a large one)."""
        if self.skip_channels and skip is None:
            raise ValueError("this decoder needs the relu3_1 skip input")
        if progress is not None:
            expect(progress, self.units(tuple(x.shape), x.device))
        # An "up" is folded into the conv after it, so the upsampled map is made band by band.
        up = self.start == "relu4_1"
        if up:
            x = banded.conv3x3(self.conv4_1, x, progress=progress)
        if self.skip_channels:
            if up:
                x, up = banded.upsample2(x, progress), False
            x = torch.cat([x, skip], dim=1)  # decoded path first, skip second
        for item in TAIL:
            if item == "up":
                up = True
                continue
            x = banded.conv3x3(getattr(self, item[0]), x, relu=item[0] != "conv1_1", upsample=up, progress=progress)
            up = False
        return x

    def units(self, shape: tuple[int, ...], device: torch.device) -> int:
        """Progress steps of :meth:`forward` for a start feature of ``shape`` on ``device``."""
        n, c, h, w = shape
        units, size = 0, self.conv1_1.weight.element_size()  # the maps have the weights' dtype
        up = self.start == "relu4_1"
        if up:
            units += banded.conv_units(shape, 256, device, element_size=size)
            c = 256
        if self.skip_channels:
            if up:
                units += banded.band_count(h, banded.map_row_work((n, c, h, w), banded.UPSAMPLE_WRITES), device)
                h, w, up = 2 * h, 2 * w, False
            c += self.skip_channels
        for item in TAIL:
            if item == "up":
                up = True
                continue
            units += banded.conv_units((n, c, h, w), item[1], device, upsample=up, element_size=size)
            if up:
                h, w, up = 2 * h, 2 * w, False
            c = item[1]
        return units


class Fusion(nn.Module):
    """The reference "Transformer" merge: ``merge_conv(relu4_1 out + up2(relu5_1 out))``, no ReLU."""

    def __init__(self, channels: int = 512) -> None:
        super().__init__()
        self.merge_conv = conv3x3(channels, channels)

    def forward(self, relu4_1: Tensor, relu5_1: Tensor, *, progress: Progress | None = None) -> Tensor:
        return banded.conv3x3(self.merge_conv, relu4_1 + upsample2(relu5_1), relu=False, progress=progress)

    def units(self, shape: tuple[int, ...], device: torch.device) -> int:
        """Progress steps of :meth:`forward` for a relu4_1 feature of ``shape`` on ``device``."""
        size = self.merge_conv.weight.element_size()
        return banded.conv_units(shape, self.merge_conv.out_channels, device, element_size=size)
