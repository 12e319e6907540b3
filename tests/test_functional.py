"""Tensor helpers: statistics, padding and sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaattn_model.functional import (
    calc_mean_std,
    crop_padding,
    mean_variance_norm,
    nearest_resize,
    pad_to_multiple,
    reflect_pad,
    vgg_sizes,
)


def test_mean_std_uses_unbiased_variance_plus_eps():
    x = torch.tensor([1.0, 2.0, 4.0, 7.0], dtype=torch.float64).view(1, 1, 2, 2)
    mean, std = calc_mean_std(x)
    assert mean.item() == 3.5
    assert std.item() == pytest.approx(np.sqrt(np.var([1, 2, 4, 7], ddof=1) + 1e-5))


def test_mvn_of_a_flat_map_is_zero_not_nan():
    out = mean_variance_norm(torch.full((1, 2, 4, 4), 3.0))
    assert torch.equal(out, torch.zeros_like(out))


def test_nearest_resize_is_legacy_nearest():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert nearest_resize(x, (2, 2)).flatten().tolist() == [0.0, 2.0, 8.0, 10.0]  # top-left of each block
    y = torch.arange(5.0).view(1, 1, 1, 5)
    # legacy nearest: src = floor(dst * 5 / 3) -> 0, 1, 3 ("nearest-exact" would give 0, 2, 4)
    assert nearest_resize(y, (1, 3)).flatten().tolist() == [0.0, 1.0, 3.0]


def test_vgg_sizes_use_ceil_pooling():
    assert vgg_sizes(62, 17) == {
        "relu1_1": (62, 17), "relu2_1": (31, 9), "relu3_1": (16, 5), "relu4_1": (8, 3), "relu5_1": (4, 2),
    }  # fmt: skip


@pytest.mark.parametrize("h, w", [(1, 1), (1, 7), (5, 3), (31, 33), (64, 64), (100, 17)])
def test_pad_to_multiple_then_crop_round_trips(h, w):
    x = torch.rand(2, 3, h, w)
    padded, pads = pad_to_multiple(x, 16, 32)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert min(padded.shape[-2:]) >= 32
    assert torch.equal(crop_padding(padded, pads), x)


def test_reflect_pad_mirrors_beyond_the_image_size():
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    out = reflect_pad(x, 0, 0, 0, 6)
    assert out.flatten().tolist() == [1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]


def test_legal_size_is_not_padded():
    x = torch.rand(1, 3, 48, 64)
    padded, pads = pad_to_multiple(x, 16, 32)
    assert pads == (0, 0, 0, 0) and torch.equal(padded, x)
