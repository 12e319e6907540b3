"""Offline quality metrics for stylised images (no downloaded weights beyond the VGG encoder).

* :func:`ssim` - structural similarity (Wang et al. 2004; Gaussian window 11, sigma 1.5)
  on luma, a structure-preservation score against the content.
* :func:`content_loss` - MSE between mean-variance-normalised relu4_1 and relu5_1
  features of the result and of the content (the AdaAttN paper's content term).
* :func:`style_loss` - sum over relu1_1 .. relu5_1 of the MSE between the channel means
  and between the channel stds of the result and of the style (AdaIN's style loss).
* :func:`warping_error` - temporal stability: each stylised frame against the previous
  one (or the one ``gap`` frames back) warped by the optical flow of the *input* frames,
  occlusions masked by a forward-backward check (Lai et al. 2018, Ruder et al. 2016).
* :func:`frame_difference_error` - flow-free flicker: how much the result changes from
  frame to frame beyond how much the input does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .color import rgb_to_ycbcr
from .flow import consistent, have_flow, optical_flow, warp
from .functional import calc_mean_std, mean_variance_norm
from .vgg import TAPS, VGGEncoder

CONTENT_TAPS = ("relu4_1", "relu5_1")


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM per image between RGB batches ``a``, ``b`` [N,3,H,W] in [0,1], on luma.

    Images smaller than the window use a window of their smaller side. Returns [N].
    """
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs images of the same shape, got {list(a.shape)} and {list(b.shape)}")
    x = rgb_to_ycbcr(a.double())[:, :1]
    y = rgb_to_ycbcr(b.double())[:, :1]
    size = min(window, *x.shape[-2:])
    g = _gaussian_window(size, sigma, x.dtype, x.device)
    kh, kw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, kh), kw)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1).to(a.dtype)


def vgg_taps(encoder: VGGEncoder, images: Tensor) -> dict[str, Tensor]:
    device, dtype = next(encoder.parameters()).device, next(encoder.parameters()).dtype
    return {k: v.float() for k, v in encoder.taps(images.to(device=device, dtype=dtype)).items()}


def content_loss(encoder: VGGEncoder, result: Tensor, content: Tensor) -> Tensor:
    """Per-image content loss [N] (normalised relu4_1 and relu5_1 features)."""
    fr, fc = vgg_taps(encoder, result), vgg_taps(encoder, content)
    total = torch.zeros(result.shape[0], device=fr["relu1_1"].device)
    for tap in CONTENT_TAPS:
        total += (mean_variance_norm(fr[tap]) - mean_variance_norm(fc[tap])).pow(2).flatten(1).mean(1)
    return total


def style_statistics(encoder: VGGEncoder, images: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Channel mean and std [N,C] at each tap (for :func:`style_loss_from_stats`)."""
    return {tap: tuple(s.flatten(1) for s in calc_mean_std(f)) for tap, f in vgg_taps(encoder, images).items()}


def style_loss_from_stats(
    result: dict[str, tuple[Tensor, Tensor]], style: dict[str, tuple[Tensor, Tensor]]
) -> Tensor:
    """Per-image style loss [N] from precomputed statistics (style batch 1 broadcasts)."""
    total = 0
    for tap in TAPS:
        (mr, sr), (ms, ss) = result[tap], style[tap]
        total = total + (mr - ms).pow(2).mean(1) + (sr - ss).pow(2).mean(1)
    return total


def style_loss(encoder: VGGEncoder, result: Tensor, style: Tensor) -> Tensor:
    """Per-image style loss [N] between results and a style [1|N,3,h,w]."""
    return style_loss_from_stats(style_statistics(encoder, result), style_statistics(encoder, style))


# --- temporal stability -------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePairs:
    """Flows of the *input* frames from frame t back to frame t - gap, with validity masks.

    Computed once per clip and gap, then used to score any stylisation of that clip.
    """

    gap: int
    flows: tuple[Tensor, ...]  # [2,H,W] each, for t = gap .. T-1
    masks: tuple[Tensor, ...]  # [1,H,W] each: 1 where the flow passed the forward-backward check


def frame_pairs(frames: Tensor, gap: int = 1) -> FramePairs:
    """Flows and occlusion masks between frames t and t - ``gap`` of ``frames`` [T,3,H,W]."""
    if not 1 <= gap < frames.shape[0]:
        raise ValueError(f"gap must be in [1, {frames.shape[0] - 1}] for {frames.shape[0]} frames, got {gap}")
    flows, masks = [], []
    for t in range(gap, frames.shape[0]):
        back = optical_flow(frames[t], frames[t - gap])  # frame t -> frame t - gap
        forward = optical_flow(frames[t - gap], frames[t])
        flows.append(back)
        masks.append(consistent(back[None], forward[None])[0])
    return FramePairs(gap, tuple(flows), tuple(masks))


def warping_error(outputs: Tensor, pairs: FramePairs) -> float:
    """Mean over t of the masked MSE between output t and output t - gap warped onto it.

    ``outputs`` [T,3,H,W] in [0,1] is a stylisation of the clip ``pairs`` was made from.
    Occluded pixels (failing the forward-backward flow check) are left out.
    """
    errors = []
    for i, (flow, mask) in enumerate(zip(pairs.flows, pairs.masks)):
        t = i + pairs.gap
        previous = warp(outputs[t - pairs.gap][None].float(), flow[None])[0]
        diff = (outputs[t].float() - previous).pow(2).mean(0, keepdim=True)
        errors.append(float((diff * mask).sum() / mask.sum().clamp_min(1.0)))
    return sum(errors) / len(errors)


def frame_difference_error(outputs: Tensor, inputs: Tensor) -> float:
    """Flow-free flicker: mean |(O_t - O_{t-1}) - (I_t - I_{t-1})| over frames and pixels.

    Zero when the result changes exactly as the input does (static scenes: when it does
    not change at all); large when it flickers on its own.
    """
    if outputs.shape != inputs.shape or outputs.shape[0] < 2:
        raise ValueError("frame difference needs outputs and inputs of the same shape, with 2 or more frames")
    d_out = outputs[1:].float() - outputs[:-1].float()
    d_in = inputs[1:].float() - inputs[:-1].float()
    return float((d_out - d_in).abs().mean())


def temporal_metrics(inputs: torch.Tensor, outputs: torch.Tensor, long_gap: int = 5, pairs=None) -> dict:
    """Warping errors (None without OpenCV) and the frame-difference error of a clip."""
    out = {"frame_difference_error": frame_difference_error(outputs, inputs)}
    if not have_flow():
        out["warping_error_short"] = out["warping_error_long"] = None
        out["note"] = "warping errors need OpenCV: pip install 'adaattn[metrics]'"
        return out
    pairs = pairs or {1: frame_pairs(inputs, 1), long_gap: frame_pairs(inputs, min(long_gap, inputs.shape[0] - 1))}
    out["warping_error_short"] = warping_error(outputs, pairs[1])
    out["warping_error_long"] = warping_error(outputs, pairs[long_gap])
    out["long_gap"] = pairs[long_gap].gap
    return out
