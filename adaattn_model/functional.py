"""Pure tensor helpers shared by the encoder, the attention and the decoders.

All tensors are NCHW. Nothing here holds state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# eps is added to the variance (not the std), as in AdaIN and AdaAttN.
MVN_EPS = 1e-5


def calc_mean_std(x: Tensor, eps: float = MVN_EPS) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel mean and std over all positions of ``x`` [N,C,H,W].

    The variance is the unbiased one (divides by n-1), and ``eps`` is added to it
    before the square root: both choices change results and follow the reference.
    Returns tensors of shape [N,C,1,1].
    """
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    var = flat.var(dim=2, unbiased=True) + eps
    return flat.mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def mean_variance_norm(x: Tensor) -> Tensor:
    """``(x - mean) / std`` per sample and channel (the reference's ``mvn``)."""
    mean, std = calc_mean_std(x)
    return (x - mean) / std


def nearest_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Legacy ``nearest`` resize (``src = floor(dst * in / out)``), used to build keys.

    Not ``nearest-exact``, bilinear or area: the reference keys depend on this choice.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="nearest")


def pooled_size(size: int) -> int:
    """Side length after one 2x2, stride-2 max-pool with ``ceil_mode=True``."""
    return (size + 1) // 2


def vgg_sizes(height: int, width: int) -> dict[str, tuple[int, int]]:
    """Spatial size of each VGG tap (relu1_1 .. relu5_1) for an input of ``height x width``."""
    sizes = {}
    h, w = height, width
    for level in range(1, 6):
        sizes[f"relu{level}_1"] = (h, w)
        h, w = pooled_size(h), pooled_size(w)
    return sizes


def reflect_pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Reflection padding of any amount, also on images smaller than the pad.

    ``F.pad(mode="reflect")`` needs ``pad < size``; larger pads are done in several
    mirror passes, and a side of length 1 (which has nothing to mirror) is replicated.
    """
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        step = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
        if not any(step):
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, step, mode="reflect")
        left, right, top, bottom = (p - s for p, s in zip((left, right, top, bottom), step))
    return x


def padded_size(size: int, multiple: int, minimum: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``size`` and >= ``minimum``."""
    return max(minimum, multiple * math.ceil(size / multiple))


def pad_to_multiple(x: Tensor, multiple: int, minimum: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Reflect-pad ``x`` so both sides are legal; returns the padded tensor and the pads.

    Padding is split evenly between the two sides so the image stays centred.
    The pads are (top, bottom, left, right), for :func:`crop_padding`.
    """
    h, w = x.shape[-2:]
    extra_h = padded_size(h, multiple, minimum) - h
    extra_w = padded_size(w, multiple, minimum) - w
    pads = (extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2)
    return reflect_pad(x, *pads), pads


def crop_padding(x: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple` on a tensor of the padded size."""
    top, bottom, left, right = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


def batch_item(t: Tensor, index: int) -> Tensor:
    """Element ``index`` of a batch as a batch of 1; a batch of 1 serves every index."""
    return t[min(index, t.shape[0] - 1)][None]


def check_finite(x: Tensor, what: str) -> None:
    """Raise a one-line ``ValueError`` when ``x`` holds NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
