"""Frame sequences: same results as single images when stabilisers are off, and stabilisers that work."""

from __future__ import annotations

import pytest
import torch
from conftest import rand_images

from adaattn_model.adaattn import LayerStatistics, StyleSource, attention_statistics
from adaattn_model.attention import AttentionSpec
from adaattn_model.frames import FrameState, LayerState, Stabilizer, smooth_statistics, stylize_frames
from adaattn_model.pipeline import StylizeOptions, encode_content, encode_style, stylize

OPTIONS = StylizeOptions(attention=AttentionSpec("cosine_softmax", 0.05))


def frames_out(models, family, frames, style, stabilizer=Stabilizer(), chunk=2, state=None):
    model, encoder = models[family], models["encoder"]
    with torch.inference_mode():
        source = StyleSource(encode_style(encoder, style, model.family.layers))
        return torch.cat(list(stylize_frames(model, encoder, frames, [source], OPTIONS, stabilizer, chunk=chunk,
                                             state=state)))  # fmt: skip


@pytest.mark.parametrize("family", ["lite", "official-image", "official-video"])
def test_without_stabilisers_frames_equal_single_images(models, family):
    frames, style = rand_images(5, 3, 32, 48, seed=1), rand_images(1, 3, 40, 40, seed=2)
    out = frames_out(models, family, frames, style, chunk=3)
    with torch.inference_mode():
        single = stylize(models[family], models["encoder"], frames, style, options=OPTIONS)
    torch.testing.assert_close(out, single)


def test_chunking_does_not_change_stabilised_results(models):
    frames, style = rand_images(6, 3, 32, 32, seed=3), rand_images(1, 3, 32, 32, seed=4)
    stab = Stabilizer(temporal_smoothing=0.7, shared_normalization=0.8)
    a = frames_out(models, "lite", frames, style, stab, chunk=1)
    b = frames_out(models, "lite", frames, style, stab, chunk=4)
    torch.testing.assert_close(a, b)
    # a clip fed in two pieces with one state equals the whole clip
    state = FrameState()
    first = frames_out(models, "lite", frames[:2], style, stab, chunk=2, state=state)
    rest = frames_out(models, "lite", frames[2:], style, stab, chunk=2, state=state)
    torch.testing.assert_close(torch.cat([first, rest]), a)


def flicker(out):
    return (out[1:] - out[:-1]).abs().mean().item()


def test_temporal_smoothing_steadies_the_statistics_of_a_noisy_static_clip(models):
    """On a static clip with noise, smoothing turns each position's attended statistics into
    a running average, so their frame-to-frame change drops well below the raw one."""
    base = rand_images(1, 3, 32, 32, seed=5)
    noise = 0.03 * torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    frames = (base + noise).clamp(0, 1)
    model, encoder = models["lite"], models["encoder"]
    with torch.inference_mode():
        encoded = encode_content(encoder, frames, ("relu4_1",))
        style = StyleSource(encode_style(encoder, rand_images(1, 3, 40, 40, seed=7), ("relu4_1",)))
        raw = attention_statistics("relu4_1", encoded, [style], projections=None, spec=OPTIONS.attention,
                                   sampling=OPTIONS.sampling, max_sample=65536)  # fmt: skip
        smoothed = LayerStatistics(raw.mean.clone(), raw.std.clone(), raw.coverage)
        smooth_statistics(smoothed, encoded.keys["relu4_1"], LayerState(),
                          Stabilizer(temporal_smoothing=0.8, change_threshold=10.0))  # fmt: skip
    assert torch.equal(smoothed.mean[0], raw.mean[0])  # the first frame has nothing to lean on
    for field in ("mean", "std"):
        before, after = flicker(getattr(raw, field)), flicker(getattr(smoothed, field))
        assert after < 0.5 * before, (field, before, after)
    plain = frames_out(models, "lite", frames, rand_images(1, 3, 40, 40, seed=7))
    steady = frames_out(models, "lite", frames, rand_images(1, 3, 40, 40, seed=7),
                        Stabilizer(temporal_smoothing=0.8, change_threshold=10.0))  # fmt: skip
    assert flicker(steady) < flicker(plain)  # and the images flicker less too


def test_temporal_smoothing_does_not_carry_over_a_cut(models):
    a, b = rand_images(1, 3, 32, 32, seed=8), rand_images(1, 3, 32, 32, seed=9)
    frames = torch.cat([a, a, b])
    style = rand_images(1, 3, 40, 40, seed=10)
    plain = frames_out(models, "lite", frames, style)
    smooth = frames_out(models, "lite", frames, style, Stabilizer(temporal_smoothing=0.9, change_threshold=0.05))
    assert (smooth[2] - plain[2]).abs().mean() < 0.1 * (plain[2] - plain[1]).abs().mean()


def test_shared_normalization_steadies_static_areas_when_something_moves(models):
    """An object moving in one part changes every frame's feature statistics; per-frame
    normalisation then shifts the static part too. Running statistics keep it steadier."""
    base = rand_images(1, 3, 48, 96, seed=11)
    frames = base.repeat(6, 1, 1, 1)
    for t in range(6):
        frames[t, :, 8:40, 4 + 5 * t : 20 + 5 * t] = torch.tensor([1.0, 0.9, 0.1]).view(3, 1, 1)  # a moving block
    style = rand_images(1, 3, 40, 40, seed=12)
    plain = frames_out(models, "lite", frames, style)
    shared = frames_out(models, "lite", frames, style, Stabilizer(shared_normalization=0.9))
    static = (slice(None), slice(None), slice(None), slice(72, None))  # far right: never near the block
    assert flicker(shared[static]) < 0.7 * flicker(plain[static])


@pytest.mark.parametrize("kwargs", [{"temporal_smoothing": 1.0}, {"shared_normalization": -0.1},
                                    {"change_threshold": 0.0}])  # fmt: skip
def test_bad_stabiliser_settings(kwargs):
    with pytest.raises(ValueError):
        Stabilizer(**kwargs)
