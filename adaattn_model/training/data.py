"""Training images: recursive folders, the reference augmentation, deterministic per sample.

Every random choice of a sample (its style, crop, flip, pair) comes from a generator seeded
by (run seed, epoch, content index), so a sample is the same whichever worker, process or
resumed run loads it. The epoch order comes from ``DistributedSampler`` (seeded, with
``set_epoch``), which also splits it between processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler, Sampler

from ..images import IMAGE_SUFFIXES, ImageError, check_image_file

PAIR_MODES = ("shift", "different")


def require_torchvision():
    """torchvision's v2 functional transforms (the ``train`` extra), imported only when training.

    A torchvision built for another torch fails at import with errors other than
    ImportError; both become one ImportError naming the fix.
    """
    try:
        from torchvision.transforms.v2 import functional
    except Exception as error:  # noqa: BLE001
        raise ImportError(
            f"training needs a torchvision that matches torch {torch.__version__} "
            f"(pip install 'adaattn[train]'): {error}"
        ) from None
    return functional


@dataclass(frozen=True)
class ImageList:
    """The readable images of a folder (recursive, sorted) and how many files were skipped."""

    paths: tuple[Path, ...]
    skipped: int


def list_images(folder: str | os.PathLike, what: str) -> ImageList:
    """Image files under ``folder`` whose header Pillow can read; an empty result is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{what} folder {folder} does not exist")
    candidates = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    good, skipped = [], 0
    for path in candidates:
        try:
            check_image_file(path)
            good.append(path)
        except ImageError:
            skipped += 1
    if not good:
        found = f" ({skipped} unreadable)" if skipped else ""
        raise ValueError(f"{what} folder {folder} holds no readable image{found}")
    return ImageList(tuple(good), skipped)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one sample, distinct for each (run seed, epoch, index)."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 0x5EED) % (2**63 - 1)


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=generator))


class StyleTransferData(Dataset):
    """Items ``(index, epoch)`` -> {"content", "style"[, "pair"]} float [3,crop,crop] in [0,1].

    Reference pre-processing for every image: resize to ``load_size`` squared (bicubic,
    aspect ratio not kept), random ``crop_size`` crop, random horizontal flip. Each content
    gets a style drawn uniformly (with replacement). ``pair``: ``shift`` adds a second crop
    of the same resized content moved by up to ``shift`` pixels each way (same flip);
    ``different`` adds a second, randomly drawn content image.
    """

    def __init__(
        self,
        contents: Sequence[Path],
        styles: Sequence[Path],
        *,
        load_size: int = 512,
        crop_size: int = 256,
        flip: bool = True,
        seed: int = 0,
        pair: str | None = None,
        shift: int = 8,
    ) -> None:
        require_torchvision()
        if crop_size > load_size:
            raise ValueError(f"crop size {crop_size} is larger than the load size {load_size}")
        if pair is not None and pair not in PAIR_MODES:
            raise ValueError(f"unknown pair mode {pair!r}; expected one of {', '.join(PAIR_MODES)}")
        self.contents, self.styles = list(contents), list(styles)
        self.load_size, self.crop_size, self.flip = load_size, crop_size, flip
        self.seed, self.pair, self.shift = seed, pair, shift

    def __len__(self) -> int:
        return len(self.contents)

    def _load(self, path: Path) -> Image.Image:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            raise ImageError(f"{path}: unreadable image ({error})") from None
        tf = require_torchvision()
        return tf.resize(image, [self.load_size, self.load_size], interpolation=tf.InterpolationMode.BICUBIC)

    def _crop(self, image: Image.Image, top: int, left: int, flip: bool) -> Tensor:
        tf = require_torchvision()
        image = tf.crop(image, top, left, self.crop_size, self.crop_size)
        if flip:
            image = tf.horizontal_flip(image)
        return tf.to_dtype(tf.pil_to_tensor(image), torch.float32, scale=True)

    def _augment(self, image: Image.Image, g: torch.Generator) -> tuple[Tensor, int, int, bool]:
        room = self.load_size - self.crop_size
        top, left = _randint(room + 1, g), _randint(room + 1, g)
        flip = self.flip and _randint(2, g) == 1
        return self._crop(image, top, left, flip), top, left, flip

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Tensor]:
        index, epoch = item
        g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        style_index = _randint(len(self.styles), g)
        content_image = self._load(self.contents[index])
        content, top, left, flip = self._augment(content_image, g)
        style, *_ = self._augment(self._load(self.styles[style_index]), g)
        out = {"content": content, "style": style}
        if self.pair == "shift":
            room = self.load_size - self.crop_size
            dy, dx = (_randint(2 * self.shift + 1, g) - self.shift for _ in range(2))
            top2, left2 = min(max(top + dy, 0), room), min(max(left + dx, 0), room)
            out["pair"] = self._crop(content_image, top2, left2, flip)
        elif self.pair == "different":
            other = _randint(len(self.contents), g)
            out["pair"] = self._augment(self._load(self.contents[other]), g)[0]
        return out


class EpochSampler(Sampler):
    """This process's share of one epoch as ``(index, epoch)`` items, optionally skipping the first ``skip``.

    Wraps a seeded ``DistributedSampler`` (its ``set_epoch`` gives each epoch its order).
    """

    def __init__(self, size: int, *, rank: int, world: int, seed: int, epoch: int, skip: int = 0) -> None:
        self.inner = DistributedSampler(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.inner.set_epoch(epoch)
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.inner):
            if position >= self.skip:
                yield index, self.epoch

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)
