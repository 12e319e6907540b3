"""Reading and writing image files as float tensors.

Any Pillow-readable image is accepted: grayscale, palette, RGBA, 16-bit, CMYK. EXIF
orientation is applied. Colour comes back as RGB [1,3,H,W] in [0,1]; transparency, if
any, separately as [1,H,W], so it can be put back on the result.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from .files import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
ALPHA_SUFFIXES = (".png", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An image file that cannot be used (the message names it)."""


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image is too large to load safely (over {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: unreadable image ({error})") from None
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{path}: image is empty")
    return image


def check_image_file(path: str | os.PathLike) -> tuple[int, int]:
    """Read only the header; returns (width, height) or raises ImageError."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            return image.size
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{path}: unreadable image ({error})") from None


def pil_to_tensor(image: Image.Image) -> tuple[Tensor, Tensor | None]:
    """RGB [1,3,H,W] and alpha [1,H,W] (or None) in [0,1] from any PIL image."""
    image = ImageOps.exif_transpose(image)
    alpha = None
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit (or 32-bit int) grayscale
        scale = 65535.0 if image.mode.startswith("I;16") or np.asarray(image).max() > 255 else 255.0
        gray = np.asarray(image, dtype=np.float64) / scale
        rgb = np.repeat(gray[..., None], 3, axis=2)
    elif image.mode == "F":
        gray = np.asarray(image, dtype=np.float64)
        if not np.isfinite(gray).all():
            raise ImageError("image holds NaN or infinite values")
        rgb = np.repeat(gray[..., None], 3, axis=2)
    else:
        has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            image.mode == "P" and "transparency" in image.info
        )
        if has_alpha:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
            rgb, alpha = rgba[..., :3], torch.from_numpy(rgba[..., 3].astype(np.float32))[None]
        else:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.clip(0.0, 1.0), dtype=np.float32)).permute(2, 0, 1)[None]
    return tensor, alpha


def load_image(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """Load ``path`` as (RGB [1,3,H,W], alpha [1,H,W] or None), values in [0,1]."""
    path = Path(path)
    try:
        return pil_to_tensor(_open(path))
    except ImageError as error:
        if str(error).startswith(str(path)):
            raise
        raise ImageError(f"{path}: {error}") from None


def resize_max_side(image: Tensor, max_side: int | None) -> Tensor:
    """Shrink [N,C,H,W] so its longer side is at most ``max_side`` (antialiased bicubic)."""
    h, w = image.shape[-2:]
    if not max_side or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(image, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def tensor_to_pil(image: Tensor, alpha: Tensor | None = None) -> Image.Image:
    """An 8-bit PIL image from RGB [1|,3,H,W] in [0,1] (clamped, rounded) and optional alpha [1|,H,W]."""
    if image.ndim == 4:
        image = image[0]
    array = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if alpha is None:
        return Image.fromarray(array, "RGB")
    a = (alpha.detach().float().reshape(array.shape[:2]).clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(np.dstack([array, a]), "RGBA")


# PNG at zlib level 4 (ComfyUI's choice): 2-3x faster to write than PIL's 6, files about 1% larger.
SAVE_OPTIONS = {
    ".jpg": {"quality": 95},
    ".jpeg": {"quality": 95},
    ".webp": {"quality": 95},
    ".png": {"compress_level": 4},
}


def save_image(image: Tensor, path: str | os.PathLike, alpha: Tensor | None = None) -> Path:
    """Write RGB [1|,3,H,W] in [0,1] atomically; the format follows the suffix.

    Alpha is kept where the format has it (PNG, WebP, TIFF).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(f"{path}: unsupported output format; use one of {', '.join(IMAGE_SUFFIXES)}")
    pil = tensor_to_pil(image, alpha if suffix in ALPHA_SUFFIXES else None)
    options = SAVE_OPTIONS.get(suffix, {})
    with atomic_output(path) as tmp:
        pil.save(tmp, format=Image.registered_extensions()[suffix], **options)
    return path
