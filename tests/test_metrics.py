"""Metrics on synthetic cases with known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaattn_model.flow import consistent, have_flow, optical_flow, warp
from adaattn_model.metrics import content_loss, frame_difference_error, frame_pairs, ssim, style_loss, warping_error

needs_flow = pytest.mark.skipif(not have_flow(), reason="OpenCV not installed (pip install 'adaattn[metrics]')")


def texture(h=96, w=128, seed=0):
    """A smooth random texture (blurred noise), RGB in [0,1]: trackable by optical flow."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def translated_clip(frames=6, dx=2, dy=1):
    """Frames of a window moving over a larger texture by (dx, dy) pixels per frame."""
    big = texture(96 + frames * dy, 128 + frames * dx)
    return torch.cat([big[..., t * dy : t * dy + 96, t * dx : t * dx + 128] for t in range(frames)])


def test_ssim_known_answers():
    a = texture()
    assert ssim(a, a).item() == pytest.approx(1.0)
    assert ssim(torch.full_like(a, 0.3), torch.full_like(a, 0.3)).item() == pytest.approx(1.0)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert ssim(a, noisy).item() < 0.7
    shuffled = a.flatten(2)[..., torch.randperm(96 * 128, generator=torch.Generator().manual_seed(2))].view_as(a)
    assert ssim(a, shuffled).item() < 0.1


def test_frame_difference_error():
    clip = translated_clip()
    assert frame_difference_error(clip, clip) == 0.0
    flicker = clip * torch.tensor([1.0, 0.7] * 3).view(-1, 1, 1, 1)
    assert frame_difference_error(flicker, clip) > 0.1
    static = clip[:1].expand(6, -1, -1, -1)
    assert frame_difference_error(static, static) == 0.0


@needs_flow
def test_flow_recovers_a_known_translation():
    clip = translated_clip(frames=2, dx=3, dy=1)
    flow = optical_flow(clip[1], clip[0])  # frame 1 -> frame 0: content came from (x + 3, y + 1)
    inner = flow[:, 10:-10, 10:-10]
    assert inner[0].median().item() == pytest.approx(3.0, abs=0.2)
    assert inner[1].median().item() == pytest.approx(1.0, abs=0.2)
    back = optical_flow(clip[0], clip[1])
    mask = consistent(flow[None], back[None])[0]
    assert mask[:, 10:-10, 10:-10].mean() > 0.95  # consistent inside, but
    assert mask[:, :, -2:].mean() < 0.5  # pixels whose source left the frame are masked
    warped = warp(clip[:1], flow[None])[0]
    assert (warped - clip[1])[:, 10:-10, 10:-10].abs().mean() < 0.01


@needs_flow
def test_warping_error_known_answers():
    clip = translated_clip()
    pairs = frame_pairs(clip, 1)
    still = clip[:1].expand_as(clip).contiguous()
    assert warping_error(still, frame_pairs(still, 1)) == pytest.approx(0.0, abs=1e-10)  # identical frames
    assert warping_error(clip, pairs) < 2e-4  # a translation: warping explains every change
    assert warping_error(clip.pow(2), pairs) < 2e-4  # any per-pixel stylisation that moves with it too
    flicker = clip * torch.tensor([1.0, 0.7] * 3).view(-1, 1, 1, 1)
    assert warping_error(flicker, pairs) > 20 * warping_error(clip, pairs) and warping_error(flicker, pairs) > 1e-3
    long = frame_pairs(clip, 3)
    assert long.gap == 3 and len(long.flows) == 3 and warping_error(clip, long) < 5e-4


def test_losses_are_zero_for_identical_images(models):
    encoder = models["encoder"]
    a, b = texture(64, 64, 1), texture(64, 64, 2)
    with torch.inference_mode():
        assert content_loss(encoder, a, a).item() == 0.0 and style_loss(encoder, a, a).item() == 0.0
        assert content_loss(encoder, a, b).item() > 0 and style_loss(encoder, a, b).item() > 0
