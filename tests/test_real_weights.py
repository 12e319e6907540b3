"""Quality checks with the real lite weights (VGG + AdaIN decoder from 'fetch')."""

from __future__ import annotations

import pytest
import torch
from conftest import INPUTS

from adaattn_model.images import load_image, resize_max_side
from adaattn_model.metrics import content_loss, ssim, style_loss
from adaattn_model.pipeline import StylizeOptions, Stylizer

pytestmark = pytest.mark.real_weights

PAIRS = [
    ("chelsea.png", "great_wave_hokusai.jpg"),
    ("grace_hopper.jpg", "starry_night_vangogh.jpg"),
    ("rocket.jpg", "udnie_picabia.jpg"),
]


def load(name, side):
    return resize_max_side(load_image(INPUTS / name)[0], side)


@pytest.fixture(scope="module")
def stylizer(real_models):
    """The one core with its encoding cache, as the command line and the nodes run it."""
    return Stylizer(real_models["encoder"], real_models["lite"])


@pytest.fixture(scope="module")
def results(stylizer):
    out = []
    for content_name, style_name in PAIRS:
        content, style = load(content_name, 256), load(style_name, 256)
        with torch.inference_mode():
            result = stylizer.stylize(content, style).clamp(0, 1)
        out.append((content, style, result))
    return out


def test_style_statistics_move_towards_the_style(real_models, results):
    encoder = real_models["encoder"]
    with torch.inference_mode():
        for content, style, result in results:
            before, after = style_loss(encoder, content, style).item(), style_loss(encoder, result, style).item()
            assert after < 0.5 * before, (before, after)


def test_structure_is_kept(results):
    g = torch.Generator().manual_seed(0)
    for content, _, result in results:
        shuffled = result.flatten(2)[..., torch.randperm(result[0, 0].numel(), generator=g)].view_as(result)
        kept, lost = ssim(result, content).item(), ssim(shuffled, content).item()
        assert kept > lost + 0.15 and kept > 0.2, (kept, lost)


def test_lite_beats_plain_decoding_of_the_content_on_style_and_keeps_content(real_models, stylizer, results):
    """alpha=0 decodes the content's own features: low content loss, high style loss."""
    encoder = real_models["encoder"]
    content, style, result = results[0]
    encodes = stylizer.cache.encodes
    with torch.inference_mode():
        plain = stylizer.stylize(content, style, options=StylizeOptions(alpha=0.0)).clamp(0, 1)
        assert stylizer.cache.encodes == encodes  # another strength: the encodings came from the cache
        assert content_loss(encoder, plain, content) < content_loss(encoder, result, content)
        assert style_loss(encoder, result, style) < style_loss(encoder, plain, style)


def test_a_mix_of_two_styles_lies_between_them(real_models, stylizer, results):
    encoder = real_models["encoder"]
    content, style_a, result_a = results[0]
    style_b = load("udnie_picabia.jpg", 256)
    with torch.inference_mode():
        result_b = stylizer.stylize(content, style_b).clamp(0, 1)
        mixed = stylizer.stylize(content, [style_a, style_b]).clamp(0, 1)
        to_a = [style_loss(encoder, r, style_a).item() for r in (result_a, mixed, result_b)]
        to_b = [style_loss(encoder, r, style_b).item() for r in (result_a, mixed, result_b)]
    assert to_a[0] < to_a[1] < to_a[2], to_a
    assert to_b[2] < to_b[1] < to_b[0], to_b
