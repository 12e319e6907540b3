"""Loading an image sequence (frames) from a folder of ComfyUI's input directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..adaattn_model.images import IMAGE_SUFFIXES, load_image
from ..adaattn_model.sorting import natural_key
from . import host
from .bundles import CATEGORY
from .tensors import rgb_to_image


def sequence_files(folder: str) -> list[Path]:
    """The images in ``folder`` (relative to the input directory), in natural name order (2 before 10)."""
    root = Path(host.input_directory()).resolve()
    target = (root / folder).resolve()
    if not folder or Path(folder).is_absolute() or not target.is_relative_to(root):
        raise ValueError(f"folder must be a subfolder of ComfyUI's input directory, got {folder!r}")
    if not target.is_dir():
        raise ValueError(f"no folder {folder!r} in ComfyUI's input directory ({root})")
    found = (p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(found, key=lambda p: natural_key(p.name))


class AdaAttNLoadFrames:
    DESCRIPTION = (
        "Loads an image sequence (frames named so that they sort in order) from a folder in ComfyUI's input "
        "directory as one IMAGE batch, optionally a range of it. All frames must have the same size. The batch "
        "queue client uploads frame ranges into such folders."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("frames", "names")
    OUTPUT_TOOLTIPS = ("The frames as an IMAGE batch.", "Their file names, one per line.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": ("STRING", {"default": "frames", "tooltip": "A folder inside ComfyUI's input directory."}),
                "first": ("INT", {"default": 0, "min": 0, "max": 10**7, "tooltip": "Index of the first frame "
                          "to load (in name order)."}),  # fmt: skip
                "count": ("INT", {"default": 0, "min": 0, "max": 10**6, "tooltip": "How many frames (0 = all "
                          "from the first one on)."}),  # fmt: skip
            }
        }

    @classmethod
    def IS_CHANGED(cls, folder, first, count):
        # Re-run when the folder's files change, not only when the widgets do.
        digest = hashlib.sha256()
        for path in sequence_files(folder):
            st = path.stat()
            digest.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return f"{first}:{count}:{digest.hexdigest()}"

    def load(self, folder: str, first: int, count: int):
        files = sequence_files(folder)
        chosen = files[first : first + count if count else None]
        if not chosen:
            raise ValueError(f"no frames in {folder!r} from index {first} ({len(files)} images there)")
        frames = []
        for path in chosen:
            host.check_interrupt()
            rgb, _ = load_image(path)
            if frames and rgb.shape != frames[0].shape:
                size = f"{rgb.shape[-1]}x{rgb.shape[-2]}"
                first_size = f"{frames[0].shape[-1]}x{frames[0].shape[-2]}"
                raise ValueError(f"{path.name} is {size} but {chosen[0].name} is {first_size}: frames must match")
            frames.append(rgb)
        where, dtype = host.intermediate()
        return (rgb_to_image(torch.cat(frames), where, dtype), "\n".join(p.name for p in chosen))
