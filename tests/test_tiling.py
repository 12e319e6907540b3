"""Tiled stylisation equals untiled, to float32 round-off, for every family and option."""

import pytest
import torch
from conftest import rand_images

from adaattn_model import tiling
from adaattn_model.adaattn import StyleSource
from adaattn_model.attention import AttentionSpec
from adaattn_model.functional import crop_padding, pad_to_multiple
from adaattn_model.images import save_image
from adaattn_model.pipeline import (
    Style,
    StylizeOptions,
    chosen_layers,
    decode_image,
    encode_content,
    encode_style,
    stylize,
    stylize_features,
)
from adaattn_model.sampling import Sampling

CONTENT = rand_images(1, 3, 100, 135, seed=1)  # padded to 112 x 144: not a multiple of the tiles below


def untiled_and_tiled(models, family, options, sources_of, region=None, tile=48, content=CONTENT, stages=True):
    encoder, model = models["encoder"], models[family]
    sources = sources_of(encoder, model)
    with torch.no_grad():
        encoded = encode_content(encoder, content, model.family.layers)
        expected = decode_image(model, stylize_features(model, encoded, sources, options, region=region), encoded)
        padded, pads = pad_to_multiple(content, 16, 32)
        tiled = tiling.encode_tiled(encoder, padded, model.family.layers, tile, pads=pads)
        layers, spec = chosen_layers(model, options)
        got = tiling.stylize_decode_tiled(
            model, tiled, sources, layers=layers, spec=spec, sampling=options.sampling, blend=options.blend,
            strength=options.alpha, budget_bytes=2**22, tile=tile, region=region,
        )  # fmt: skip
        got = crop_padding(got, pads)
        if not stages:
            return expected, got
        # the two tiled stages on their own: the encoding, and decoding untiled features
        assert_round_off(encoded.keys[model.family.layers[-1]], tiled.keys[model.family.layers[-1]])
        plain = stylize_features(model, encoded, sources, options, region=region)
        assert_round_off(expected, crop_padding(tiling.decode_tiled(model, plain, tile), pads))
    return expected, got


def assert_round_off(expected, got):
    assert got.shape == expected.shape
    diff = (got - expected).abs() / max(1.0, expected.abs().max().item())  # keys reach tens; images ~1
    # float32 round-off of the untiled run itself is of this order (tests/test_parity.py allows 5e-4 / 2e-5)
    assert diff.max().item() <= 1e-4 and diff.mean().item() <= 5e-6, (diff.max().item(), diff.mean().item())


def one_style(seed=2, size=(64, 80), mask=None):
    def make(encoder, model):
        style = encode_style(encoder, rand_images(1, 3, *size, seed=seed), model.family.layers)
        return [StyleSource(style, mask=mask)]

    return make


@pytest.mark.parametrize("family", ["official-image", "official-video", "lite"])
@pytest.mark.parametrize("tile", [32, 80])
def test_tiled_equals_untiled_for_every_family(models, family, tile):
    assert_round_off(*untiled_and_tiled(models, family, StylizeOptions(), one_style(), tile=tile))


@pytest.mark.parametrize(
    "options",
    [
        StylizeOptions(alpha=0.6),
        StylizeOptions(attention=AttentionSpec("cosine_softmax", 0.05)),
        StylizeOptions(attention=AttentionSpec("cosine")),
        StylizeOptions(sampling=Sampling("official", 7), layers=("relu4_1", "relu5_1")),
    ],
    ids=["strength", "cosine_softmax", "cosine", "official sampling, two layers"],
)
def test_tiled_equals_untiled_for_strength_attention_sampling_and_layers(models, options):
    assert_round_off(*untiled_and_tiled(models, "official-image", options, one_style(size=(280, 250))))


def test_tiled_equals_untiled_with_a_content_mask_and_a_style_mask(models):
    region = torch.zeros(1, 100, 135)
    region[:, 20:80, 35:120] = 1.0
    region[:, :, :10] = 0.5
    style_mask = torch.ones(1, 64, 80)
    style_mask[:, :, 40:] = 0
    got = untiled_and_tiled(models, "lite", StylizeOptions(alpha=0.8), one_style(mask=style_mask), region=region)
    assert_round_off(*got)


@pytest.mark.parametrize("blend", ["mix", "match"])
def test_tiled_equals_untiled_for_blends_with_regions(models, blend):
    left = torch.zeros(1, 100, 135)
    left[..., :70] = 1.0
    right = 1.0 - left

    def two_styles(encoder, model):
        a = encode_style(encoder, rand_images(1, 3, 64, 80, seed=3), model.family.layers)
        b = encode_style(encoder, rand_images(1, 3, 70, 50, seed=4), model.family.layers)
        return [StyleSource(a, 0.7, region=left), StyleSource(b, 0.3, region=right * 0.8)]

    assert_round_off(*untiled_and_tiled(models, "official-image", StylizeOptions(blend=blend), two_styles))


def test_the_halo_is_what_makes_it_exact(models, monkeypatch):
    """A halo narrower than the image decoder's spoiled border is visibly wrong: the check can fail."""
    monkeypatch.setattr(tiling, "DECODER_HALO", 32)
    monkeypatch.setattr(tiling, "ENCODER_HALO", {"relu3_1": 16, "relu4_1": 32, "relu5_1": 64})
    expected, got = untiled_and_tiled(models, "official-image", StylizeOptions(), one_style(), stages=False)
    assert (got - expected).abs().max().item() > 1e-3


def test_tile_sizes_off_the_grid_are_refused(models):
    for bad in (0, 8, 40, 100):
        with pytest.raises(ValueError, match="tile size must be a multiple of 16"):
            untiled_and_tiled(models, "lite", StylizeOptions(), one_style(), tile=bad)


def test_tiling_turns_on_only_past_the_limit_with_a_tile_that_fits():
    layers = ("relu4_1",)
    limit = tiling.estimated_peak_bytes(1024, 1024, layers)
    assert tiling.choose_tile(1024, 1024, layers, limit_bytes=limit) is None
    tile = tiling.choose_tile(4096, 4096, layers, limit_bytes=limit)
    assert tile is not None and tile % 16 == 0 and 256 <= tile < 1024
    grown = tile + 2 * (tiling.DECODER_HALO + tiling.ENCODER_HALO["relu4_1"])
    bigger = grown + tile  # the next candidate up (halving), with its halo
    assert (
        tiling.estimated_peak_bytes(grown, grown, layers) <= limit < tiling.estimated_peak_bytes(bigger, bigger, layers)
    )


@pytest.mark.parametrize("color", ["none", "luminance", "match"])
def test_the_core_tiles_when_asked_with_the_same_result(models, color):
    encoder, model = models["encoder"], models["lite"]
    mask = torch.ones(1, 100, 135)
    mask[:, 60:, :] = 0.3
    styles = [Style(rand_images(1, 3, 64, 80, seed=5), 0.6), Style(rand_images(1, 3, 50, 90, seed=6), 0.4)]
    run = {}
    for tile in (0, 48):
        options = StylizeOptions(alpha=0.9, color=color, blend="match", tile_size=tile)
        run[tile] = stylize(model, encoder, CONTENT, styles, mask=mask, options=options)
    assert_round_off(run[0], run[48])


def test_the_core_tiles_by_itself_past_the_memory_limit(models, monkeypatch):
    calls = []
    real = tiling.encode_tiled
    monkeypatch.setattr(tiling, "encode_tiled", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    from adaattn_model import stages

    monkeypatch.setattr(stages, "encode_tiled", tiling.encode_tiled)
    encoder, model = models["encoder"], models["lite"]
    style = rand_images(1, 3, 64, 80, seed=5)
    untiled = stylize(model, encoder, CONTENT, style, options=StylizeOptions())
    assert calls == []  # well under the default limit
    limit = tiling.estimated_peak_bytes(112, 144, ("relu4_1",)) - 1
    tiled = stylize(model, encoder, CONTENT, style, options=StylizeOptions(memory_limit_bytes=limit))
    assert calls and calls[0] % 16 == 0
    assert_round_off(untiled, tiled)


def test_bad_tile_sizes_are_one_line_errors():
    for bad in (8, 40, -16):
        with pytest.raises(ValueError, match="tile size must be"):
            StylizeOptions(tile_size=bad)


def test_a_tile_smaller_than_the_halo_and_an_image_over_the_users_limit_are_one_line_errors(models):
    encoder, model = models["encoder"], models["official-image"]
    style = rand_images(1, 3, 40, 40, seed=5)
    with pytest.raises(ValueError, match="tile size 64 is smaller than the 80-pixel halo the official-image model"):
        stylize(model, encoder, CONTENT, style, options=StylizeOptions(tile_size=64))
    needed = tiling.untileable_bytes(112, 144, model.family.layers)
    with pytest.raises(ValueError, match=r"a 144x112 image needs .* GiB .* even when tiled, over the memory limit"):
        stylize(model, encoder, CONTENT, style, options=StylizeOptions(memory_limit_bytes=needed - 1))
    stylize(model, encoder, CONTENT, style, options=StylizeOptions(memory_limit_bytes=needed))  # just fits


def test_the_command_reports_bad_tiling_settings_in_one_line(release, capsys, tmp_path):
    from adaattn_model.tools.cli import main

    content, style = tmp_path / "c.png", tmp_path / "s.png"
    save_image(CONTENT, content)
    save_image(rand_images(1, 3, 40, 40, seed=5), style)
    base = ["stylize", "--content", str(content), "--style", str(style), "-o", str(tmp_path / "o.png"), "--quiet",
            "--encoder", str(release["out"] / "vgg_normalised.safetensors"),
            "--model", str(release["out"] / "adain_decoder.safetensors"), "--device", "cpu"]  # fmt: skip
    for extra, words in ((["--tile-size", "40"], "multiple of 16"), (["--tile-size", "32"], "48-pixel halo"),
                         (["--memory-limit", "0"], "memory limit must be > 0")):  # fmt: skip
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
        assert not (tmp_path / "o.png").exists()
    assert main([*base, "--tile-size", "48"]) == 0 and (tmp_path / "o.png").exists()
