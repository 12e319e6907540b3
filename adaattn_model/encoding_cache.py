"""A bounded cache of VGG encodings, so re-running with other settings skips the encoder.

Keys name exactly what the encoding depends on: the image bytes (a BLAKE2 digest of the
tensor as fed to the encoder, with its shape and dtype), the role (a content is padded,
a style is not), the layers, and the encoder (its identity, device and dtype). Strength,
attention, sampling, masks and blending act after the encoder, so they are not part of
the key. The cache is bounded in bytes (least recently used out first) and belongs to the
object that holds the model (:class:`~adaattn_model.pipeline.Stylizer`), so it goes when
the model goes; there is no module-level cache.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

from .features import EncodedImage

DEFAULT_CACHE_BYTES = 512 * 2**20


def tensor_digest(t: Tensor) -> tuple:
    """A key for the values of ``t``: (shape, dtype, 128-bit BLAKE2b of its bytes)."""
    flat = t.detach().contiguous().reshape(-1)
    data = flat.view(torch.uint8) if flat.numel() else flat
    digest = hashlib.blake2b(data.cpu().numpy().tobytes(), digest_size=16).hexdigest()
    return tuple(t.shape), str(t.dtype), digest


def encoded_bytes(e: EncodedImage) -> int:
    return sum(t.numel() * t.element_size() for d in (e.features, e.keys) for t in d.values())


class EncodingCache:
    """Encodings by key, least recently used evicted beyond ``max_bytes`` (0 turns caching off).

    ``encodes`` counts the encoder runs made through :meth:`get_or_encode`; ``hits`` the
    encodings served from the cache.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"the encoding cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, tuple[EncodedImage, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.encodes = 0
        self._encoders: weakref.WeakKeyDictionary[torch.nn.Module, int] = weakref.WeakKeyDictionary()
        self._named = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Drop every encoding (their memory is freed once nothing else holds them)."""
        self._items.clear()
        self.bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` is held (no hit is counted, nothing moves)."""
        return key in self._items

    def get(self, key: Hashable) -> EncodedImage | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key: Hashable, value: EncodedImage) -> None:
        """Keep ``value`` (an item larger than the whole cache is not kept)."""
        size = encoded_bytes(value)
        if key in self._items:
            self.bytes -= self._items.pop(key)[1]
        if size > self.max_bytes:
            return
        while self._items and self.bytes + size > self.max_bytes:
            self.bytes -= self._items.popitem(last=False)[1][1]
        self._items[key] = (value, size)
        self.bytes += size

    def get_or_encode(self, key: Hashable, encode: Callable[[], EncodedImage]) -> EncodedImage:
        found = self.get(key)
        if found is not None:
            return found
        self.encodes += 1
        value = encode()
        self.put(key, value)
        return value

    def key(self, role: str, image: Tensor, layers: Sequence[str], encoder: torch.nn.Module) -> tuple:
        """The key of ``image`` (as fed to ``encoder``: on its device and dtype) encoded as ``role``.

        The encoder is named by a number given on first sight (not ``id``, which a new object can reuse).
        """
        if encoder not in self._encoders:
            self._encoders[encoder] = self._named
            self._named += 1  # never reused, even after that encoder is gone
        p = next(encoder.parameters())
        return role, tensor_digest(image), tuple(layers), self._encoders[encoder], str(p.device), str(p.dtype)
