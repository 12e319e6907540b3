"""ComfyUI IMAGE/MASK tensors <-> the engine's NCHW RGB, and the checks around them.

IMAGE is [B,H,W,C] float in [0,1] with C = 3 (also 1 or 4 from some nodes); MASK is
[B,H,W] (or [H,W]). Inputs are never modified in place: outputs are new tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def image_to_rgb(image: Tensor, what: str = "image") -> Tensor:
    """IMAGE [B,H,W,C] (C = 1, 3 or 4) -> float32 RGB [B,3,H,W] (alpha dropped, gray repeated)."""
    if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"{what} must be an IMAGE [batch, height, width, 1|3|4 channels], got {shape}")
    if min(image.shape[:3]) == 0:
        raise ValueError(f"{what} is empty (shape {list(image.shape)})")
    rgb = image.float()
    if rgb.shape[-1] == 1:
        rgb = rgb.expand(-1, -1, -1, 3)
    rgb = rgb[..., :3].movedim(-1, 1).contiguous()
    if not bool(torch.isfinite(rgb).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    return rgb.clamp(0, 1)


def rgb_to_image(rgb: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """RGB [B,3,H,W] -> IMAGE [B,H,W,3] clamped to [0,1] on ``device``/``dtype``."""
    return rgb.float().clamp(0, 1).movedim(1, -1).contiguous().to(device=device, dtype=dtype)


def fit_mask(mask: Tensor | None, size: tuple[int, int], batch: int, what: str = "mask") -> Tensor | None:
    """A MASK as [1|batch, H, W] float on the CPU at ``size`` = (H, W).

    A mask of another size with the same aspect ratio (within 2%) is resized; any other
    size, or a batch that is neither 1 nor ``batch``, is an error.
    """
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or min(mask.shape) == 0:
        raise ValueError(f"{what} must be a MASK [batch, height, width], got {list(mask.shape)}")
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{what} has a batch of {mask.shape[0]}; expected 1 or {batch}")
    m = mask.detach().float().cpu()
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{what} contains NaN or infinite values")
    h, w = size
    mh, mw = m.shape[-2:]
    if (mh, mw) != (h, w):
        if abs(mh / mw - h / w) > 0.02 * (h / w):
            raise ValueError(
                f"{what} is {mw}x{mh} but the image is {w}x{h} (a different aspect ratio); make the mask from that image"
            )
        m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return m.clamp(0, 1)
