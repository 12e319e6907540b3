"""Which style positions the attention looks at.

``exact`` uses every style position (deterministic, our default). ``official`` is the
reference rule: when a layer has *more than* ``max_sample`` style positions, keep the
first ``max_sample`` entries of a CPU ``randperm`` drawn from a fresh generator seeded
with ``seed`` (re-seeded for every layer). The reference seeds the global RNG for this;
a local ``torch.Generator`` gives the same permutation without that side effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SAMPLING_MODES = ("exact", "official")
DEFAULT_SEED = 6666  # the reference's test-time seed


@dataclass(frozen=True)
class Sampling:
    """A sampling mode and its seed (the seed only matters in ``official`` mode)."""

    mode: str = "exact"
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling mode {self.mode!r}; expected one of {', '.join(SAMPLING_MODES)}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")

    def indices(self, num_positions: int, max_sample: int) -> Tensor | None:
        """Style positions to keep (a CPU int64 tensor), or None to keep them all."""
        if self.mode == "exact" or num_positions <= max_sample:
            return None
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        return torch.randperm(num_positions, generator=generator)[:max_sample]
