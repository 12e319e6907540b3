"""Colour preservation: keep the content's colours while taking the style's texture.

Two ways, both optional:
  * ``luminance``: stylise, then keep the result's luma and the content's chroma (YCbCr).
  * ``match``: before stylising, recolour the style so its RGB mean and covariance equal
    the content's (the linear colour transfer of Gatys et al. / the AdaIN paper).
"""

from __future__ import annotations

import torch
from torch import Tensor

COLOR_MODES = ("none", "luminance", "match")

# ITU-R BT.601 full-range RGB <-> YCbCr (chroma centred on 0).
_RGB_TO_YCC = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64
)


def _apply(matrix: Tensor, image: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(image), image)


def rgb_to_ycbcr(image: Tensor) -> Tensor:
    return _apply(_RGB_TO_YCC, image)


def ycbcr_to_rgb(image: Tensor) -> Tensor:
    return _apply(torch.linalg.inv(_RGB_TO_YCC), image)


def luma(image: Tensor) -> Tensor:
    """The Y of :func:`rgb_to_ycbcr` alone: [N,3,H,W] RGB -> [N,1,H,W]."""
    return torch.einsum("j,njhw->nhw", _RGB_TO_YCC[0].to(image), image).unsqueeze(1)


def preserve_luminance(stylised: Tensor, content: Tensor) -> Tensor:
    """Luma of ``stylised`` with the chroma of ``content`` (both [N,3,H,W] RGB, same size)."""
    if stylised.shape != content.shape:
        raise ValueError(f"shapes differ: {list(stylised.shape)} vs {list(content.shape)}")
    y = rgb_to_ycbcr(stylised)[:, :1]
    cbcr = rgb_to_ycbcr(content.to(stylised))[:, 1:]
    return ycbcr_to_rgb(torch.cat([y, cbcr], dim=1))


def _sqrtm(cov: Tensor, inverse: bool = False) -> Tensor:
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(1e-5)
    power = -0.5 if inverse else 0.5
    return vectors @ torch.diag_embed(values**power) @ vectors.transpose(-1, -2)


def match_color(source: Tensor, target: Tensor) -> Tensor:
    """Recolour ``source`` [N,3,H,W] so its RGB mean/covariance match ``target`` [1|N,3,h,w].

    Computed in float64; the result is clamped to [0,1].
    """
    src = source.double().flatten(2)
    tgt = target.double().flatten(2).expand(src.shape[0], -1, -1)
    mu_s, mu_t = src.mean(2, keepdim=True), tgt.mean(2, keepdim=True)
    cov_s = (src - mu_s) @ (src - mu_s).transpose(1, 2) / max(src.shape[2] - 1, 1)
    cov_t = (tgt - mu_t) @ (tgt - mu_t).transpose(1, 2) / max(tgt.shape[2] - 1, 1)
    eye = 1e-5 * torch.eye(3, dtype=torch.float64)
    transform = _sqrtm(cov_t + eye) @ _sqrtm(cov_s + eye, inverse=True)
    out = transform @ (src - mu_s) + mu_t
    return out.view_as(source).clamp(0, 1).to(source.dtype)
