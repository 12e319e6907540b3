"""Sampling modes: the official rule is bit-identical to the reference and has no side effects."""

from __future__ import annotations

import pytest
import torch

from adaattn_model.sampling import DEFAULT_SEED, Sampling


def reference_indices(n, max_sample, seed):
    """What the reference does: reseed the global RNG, CPU randperm, keep the first max_sample."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.randperm(n)[:max_sample]


@pytest.mark.parametrize("n, limit", [(16384, 4096), (4097, 4096), (66564, 65536)])
@pytest.mark.parametrize("seed", [DEFAULT_SEED, 0, 123456789])
def test_official_matches_the_reference_permutation(n, limit, seed):
    got = Sampling("official", seed).indices(n, limit)
    assert got.dtype == torch.int64 and got.device.type == "cpu"
    assert torch.equal(got, reference_indices(n, limit, seed))


def test_limit_is_strictly_greater():
    assert Sampling("official").indices(4096, 4096) is None
    assert Sampling("official").indices(4097, 4096).numel() == 4096


def test_exact_keeps_everything():
    assert Sampling("exact").indices(10**6, 4096) is None


def test_no_global_rng_side_effect():
    torch.manual_seed(42)
    before = torch.get_rng_state()
    Sampling("official", 7).indices(10000, 100)
    assert torch.equal(before, torch.get_rng_state())


def test_default_seed_is_the_reference_seed():
    assert Sampling().seed == 6666 and Sampling().mode == "exact"


@pytest.mark.parametrize("kwargs", [{"mode": "random"}, {"seed": -1}, {"seed": 2**63}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Sampling(**kwargs)
