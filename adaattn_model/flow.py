"""Optical flow, warping and occlusion masks, for temporal-stability metrics.

Flow comes from OpenCV's DIS optical flow (Kroeger et al. 2016), an optional dependency:
``pip install "adaattn[metrics]"`` (opencv-python-headless). Nothing at stylisation time
needs it, and the ComfyUI node pack does not require it.

Conventions: a flow [2,H,W] holds (dx, dy) in pixels; ``flow = optical_flow(a, b)``
means a(x) ~ b(x + flow(x)), so ``warp(b_image, flow)`` brings b onto a's grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .color import rgb_to_ycbcr

INSTALL_HINT = 'optical flow needs OpenCV: pip install "adaattn[metrics]" (or opencv-python-headless)'


def have_flow() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _gray_u8(image: Tensor) -> np.ndarray:
    """Luma of an RGB image [3,H,W] in [0,1] as uint8 [H,W] (what DIS works on)."""
    y = rgb_to_ycbcr(image[None].double().clamp(0, 1))[0, 0]
    return (y * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def optical_flow(a: Tensor, b: Tensor) -> Tensor:
    """Dense flow [2,H,W] from RGB frame ``a`` [3,H,W] to ``b`` (DIS, medium preset)."""
    try:
        import cv2
    except ImportError:
        raise RuntimeError(INSTALL_HINT) from None
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(_gray_u8(a), _gray_u8(b), None)
    return torch.from_numpy(np.ascontiguousarray(flow.transpose(2, 0, 1))).float()


def _grid(flow: Tensor) -> Tensor:
    """Sampling grid in [-1, 1] for positions x + flow(x); flow [N,2,H,W] -> [N,H,W,2]."""
    n, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype, device=flow.device),
        torch.arange(w, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    x = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    y = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return torch.stack([x, y], dim=-1)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Sample ``image`` [N,C,H,W] at x + flow(x) (bilinear; outside the frame: border value)."""
    return F.grid_sample(image, _grid(flow.to(image)), mode="bilinear", padding_mode="border", align_corners=True)


def inside(flow: Tensor) -> Tensor:
    """[N,1,H,W]: 1 where x + flow(x) falls inside the frame."""
    grid = _grid(flow)
    ok = (grid.abs() <= 1.0).all(dim=-1)
    return ok[:, None].float()


def consistent(flow_ab: Tensor, flow_ba: Tensor) -> Tensor:
    """[N,1,H,W] validity of ``flow_ab`` by the forward-backward check (Sundaram et al. 2010).

    A position is kept when following a->b then b->a comes back near it:
    |f_ab + f_ba(x + f_ab)|^2 <= 0.01 (|f_ab|^2 + |f_ba(x + f_ab)|^2) + 0.5, and x + f_ab
    is inside the frame. Occluded and dis-occluded pixels fail it.
    """
    back = warp(flow_ba, flow_ab)
    total = (flow_ab + back).pow(2).sum(1, keepdim=True)
    bound = 0.01 * (flow_ab.pow(2).sum(1, keepdim=True) + back.pow(2).sum(1, keepdim=True)) + 0.5
    return (total <= bound).float() * inside(flow_ab)
