"""Colour preservation."""

from __future__ import annotations

import torch
from conftest import rand_images

from adaattn_model.color import match_color, preserve_luminance, rgb_to_ycbcr, ycbcr_to_rgb


def test_ycbcr_round_trip():
    x = rand_images(2, 3, 8, 8)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, rtol=1e-5, atol=1e-5)


def test_luminance_keeps_content_chroma_and_result_luma():
    stylised, content = rand_images(1, 3, 16, 16, seed=1), rand_images(1, 3, 16, 16, seed=2)
    out = preserve_luminance(stylised, content)
    torch.testing.assert_close(rgb_to_ycbcr(out)[:, 0], rgb_to_ycbcr(stylised)[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rgb_to_ycbcr(out)[:, 1:], rgb_to_ycbcr(content)[:, 1:], rtol=1e-5, atol=1e-5)


def test_match_color_gives_target_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    source = 0.3 + 0.2 * torch.rand(1, 3, 64, 64, generator=g)
    mix = torch.tensor([[0.5, 0.1, 0.0], [0.0, 0.4, 0.2], [0.1, 0.0, 0.3]])
    target = (torch.einsum("ij,njhw->nihw", mix, torch.rand(1, 3, 64, 64, generator=g)) + 0.2).clamp(0, 1)
    out = match_color(source, target)

    def stats(x):
        f = x.double().flatten(2)[0]
        return f.mean(1), torch.cov(f)

    (m_out, c_out), (m_t, c_t) = stats(out), stats(target)
    torch.testing.assert_close(m_out, m_t, rtol=0, atol=1e-3)
    torch.testing.assert_close(c_out, c_t, rtol=0, atol=1e-3)
