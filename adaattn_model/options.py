"""How to stylise: one options object shared by the Python API, the command line and the nodes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .adaattn import BLEND_MODES
from .attention import ATTENTION_KINDS, AttentionSpec, budget_for, resolve_attention
from .color import COLOR_MODES
from .model import Family
from .sampling import Sampling
from .tiling import check_tile, choose_tile, memory_limit, min_tile, untileable_bytes


@dataclass(frozen=True)
class StylizeOptions:
    """How to stylise.

    ``alpha``: strength in [0, 1]. ``attention``: None or "auto" (the family's variant), a
    kind name, or an :class:`AttentionSpec` (kind and temperature both given);
    ``temperature`` None or 0 means the chosen kind's default (see
    :func:`~adaattn_model.attention.resolve_attention`). ``layers`` None means all of the
    family's layers (the others keep the content). ``blend``: how several styles combine
    (mix or match). ``color``: none, luminance (keep the content's chroma) or match
    (recolour the style to the content first). ``style_max_side``: shrink styles to this
    longer side (0 keeps their size). ``budget_bytes``: the attention workspace (None:
    :func:`~adaattn_model.attention.budget_for` the model's device). ``tile_size``: run
    the convolutional stages in tiles of this many pixels (a multiple of 16; exact, see
    :mod:`~adaattn_model.tiling`); None tiles only when an untiled run's activations
    would exceed ``memory_limit_bytes`` (None: :func:`~adaattn_model.tiling.memory_limit`
    of the device), 0 never tiles. ``global_share``: how far each position's attended
    statistics move to the whole style's (0..1, see
    :class:`~adaattn_model.attention.AttentionSpec`); ``detail``: share of the content's
    fine luma detail put back after decoding (0..1, :mod:`~adaattn_model.detail`); None
    takes the family's default for either (lite: 0.7 and 0.6, the authors' models: 0).
    """

    alpha: float = 1.0
    attention: AttentionSpec | str | None = None
    temperature: float | None = None
    sampling: Sampling = field(default_factory=Sampling)
    layers: tuple[str, ...] | None = None
    blend: str = "mix"
    budget_bytes: int | None = None
    color: str = "none"
    style_max_side: int = 0
    tile_size: int | None = None
    memory_limit_bytes: int | None = None
    global_share: float | None = None
    detail: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha (strength) must be in [0, 1], got {self.alpha}")
        if isinstance(self.attention, str) and self.attention not in ("auto", *ATTENTION_KINDS):
            kinds = ", ".join(ATTENTION_KINDS)
            raise ValueError(f"unknown attention {self.attention!r}; expected auto or one of {kinds}")
        t = self.temperature
        if t is not None and not (t >= 0 and math.isfinite(t)):
            raise ValueError(f"attention temperature must be a positive number (0: the default), got {t}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"unknown blend mode {self.blend!r}; expected one of {', '.join(BLEND_MODES)}")
        if self.color not in COLOR_MODES:
            raise ValueError(f"unknown colour mode {self.color!r}; expected one of {', '.join(COLOR_MODES)}")
        if self.style_max_side < 0:
            raise ValueError(f"style_max_side must be >= 0, got {self.style_max_side}")
        if self.tile_size:
            check_tile(self.tile_size)
        if self.tile_size is not None and self.tile_size < 0:
            raise ValueError(f"tile size must be >= 0 (0: never tile), got {self.tile_size}")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise ValueError(f"the memory limit must be > 0 bytes, got {self.memory_limit_bytes}")
        for name in ("global_share", "detail"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.budget_bytes is not None and self.budget_bytes <= 0:
            raise ValueError(f"the attention memory budget must be > 0 bytes, got {self.budget_bytes}")

    def spec_for(self, family: Family) -> AttentionSpec:
        """The attention to run for ``family``, by the one rule of ``resolve_attention``."""
        if isinstance(self.attention, AttentionSpec):
            spec = AttentionSpec(self.attention.kind, self.temperature) if self.temperature else self.attention
            return spec if self.global_share is None else replace(spec, global_share=self.global_share)
        return resolve_attention(family.attention, self.attention, self.temperature, self.global_share)

    def detail_for(self, family: Family) -> float:
        """The share of the content's fine luma detail to put back for ``family``."""
        return family.detail if self.detail is None else self.detail

    def budget(self, device: torch.device) -> int:
        return self.budget_bytes if self.budget_bytes is not None else budget_for(device)

    def tile_for(self, height: int, width: int, family: Family, device: torch.device, batch: int = 1) -> int | None:
        """The tile size for a padded content of ``height x width`` (None: untiled)."""
        if self.tile_size:
            halo = min_tile(family.layers)
            if self.tile_size < halo:
                raise ValueError(
                    f"tile size {self.tile_size} is smaller than the {halo}-pixel halo the {family.name} model needs "
                    f"around each tile; use at least {halo} (or 0 to choose automatically)"
                )
        if self.tile_size is not None:
            return self.tile_size or None
        if self.memory_limit_bytes is not None:  # a limit the user set: what tiling cannot shrink must fit in it
            kept = untileable_bytes(height, width, family.layers) * max(1, batch)
            if kept > self.memory_limit_bytes:
                raise ValueError(
                    f"a {width}x{height} image needs {kept / 2**30:.2f} GiB for its features at the attention layers "
                    f"even when tiled, over the memory limit of {self.memory_limit_bytes / 2**30:.2f} GiB; raise "
                    "the limit or shrink the image"
                )
        limit = self.memory_limit_bytes if self.memory_limit_bytes is not None else memory_limit(device)
        return choose_tile(height, width, family.layers, limit // max(1, batch))
