"""End-to-end behaviour of the engine with tiny random-weight models."""

from __future__ import annotations

import pytest
import torch
from conftest import rand_images

from adaattn_model.adaattn import StyleSource, adaattn_layer
from adaattn_model.attention import AttentionSpec
from adaattn_model.pipeline import (
    Style,
    StylizeOptions,
    decode_image,
    encode_content,
    encode_style,
    stylize,
    stylize_features,
)
from adaattn_model.sampling import Sampling

FAMILIES = ("official-image", "official-video", "lite")


def run(models, family, content, style, **kw):
    with torch.inference_mode():
        return stylize(models[family], models["encoder"], content, style, **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (33, 47), (16, 100)])
def test_any_content_size_comes_back_at_its_size(models, family, size):
    content, style = rand_images(1, 3, *size, seed=1), rand_images(1, 3, 40, 40, seed=2)
    out = run(models, family, content, style)
    assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


@pytest.mark.parametrize("style_size", [(1, 1), (5, 200), (31, 31)])
def test_any_style_size(models, style_size):
    out = run(models, "official-image", rand_images(1, 3, 32, 32), rand_images(1, 3, *style_size, seed=3))
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_one_style_broadcasts_and_paired_styles_pair_up(models):
    contents, styles = rand_images(3, 3, 32, 48, seed=1), rand_images(3, 3, 40, 40, seed=2)
    broadcast = run(models, "lite", contents, styles[:1])
    for i in range(3):
        torch.testing.assert_close(broadcast[i : i + 1], run(models, "lite", contents[i : i + 1], styles[:1]))
    paired = run(models, "lite", contents, styles, content_chunk=2)
    torch.testing.assert_close(paired[2:3], run(models, "lite", contents[2:3], styles[2:3]))


def test_mismatched_batches_are_a_clear_error(models):
    with pytest.raises(ValueError, match="style 1 has a batch of 2 for 3 contents"):
        run(models, "lite", rand_images(3, 3, 32, 32), rand_images(2, 3, 32, 32))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(3, 32, 32), r"content must be an RGB batch of shape \[N,3,H,W\]"),
        (torch.rand(1, 4, 32, 32), r"content must be an RGB batch"),
        (torch.rand(1, 3, 0, 32), "content is empty"),
        (torch.full((1, 3, 8, 8), float("nan")), "content contains NaN or infinite values"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "must be a float tensor"),
    ],
)
def test_bad_content_tensors(models, bad, message):
    with pytest.raises(ValueError, match=message):
        run(models, "lite", bad, rand_images(1, 3, 32, 32))


def test_flat_images_give_finite_results(models):
    for family in FAMILIES:
        out = run(models, family, torch.full((1, 3, 32, 32), 0.5), torch.zeros(1, 3, 32, 32))
        assert torch.isfinite(out).all()


def test_alpha_zero_decodes_the_content_features(models):
    model, encoder = models["official-image"], models["encoder"]
    content, style = rand_images(1, 3, 48, 32), rand_images(1, 3, 40, 40, seed=5)
    with torch.inference_mode():
        enc = encode_content(encoder, content, model.family.layers)
        plain = decode_image(model, dict(enc.features), enc)
    out = run(models, "official-image", content, style, options=StylizeOptions(alpha=0.0))
    torch.testing.assert_close(out, plain)


def test_alpha_interpolates_features_linearly(models):
    model, encoder = models["lite"], models["encoder"]
    content, style = rand_images(1, 3, 32, 32), rand_images(1, 3, 32, 32, seed=4)
    with torch.inference_mode():
        enc, s = encode_content(encoder, content, ("relu4_1",)), encode_style(encoder, style, ("relu4_1",))
        full = stylize_features(model, enc, [StyleSource(s)], StylizeOptions(alpha=1.0))["relu4_1"]
        half = stylize_features(model, enc, [StyleSource(s)], StylizeOptions(alpha=0.3))["relu4_1"]
    torch.testing.assert_close(half, 0.3 * full + 0.7 * enc.features["relu4_1"], rtol=1e-5, atol=1e-5)


def test_leaving_out_layers_keeps_their_content_features(models):
    model, encoder = models["official-image"], models["encoder"]
    enc = encode_content(encoder, rand_images(1, 3, 32, 32), model.family.layers)
    style = encode_style(encoder, rand_images(1, 3, 32, 32, seed=9), model.family.layers)
    with torch.inference_mode():
        feats = stylize_features(model, enc, [StyleSource(style)], StylizeOptions(layers=("relu4_1",)))
    assert feats["relu3_1"] is enc.features["relu3_1"] and feats["relu5_1"] is enc.features["relu5_1"]
    assert not torch.equal(feats["relu4_1"], enc.features["relu4_1"])


def test_unsupported_layer_is_a_clear_error(models):
    with pytest.raises(ValueError, match="the lite model cannot stylise relu5_1; it uses relu4_1"):
        run(models, "lite", rand_images(1, 3, 32, 32), rand_images(1, 3, 32, 32),
            options=StylizeOptions(layers=("relu5_1",)))  # fmt: skip


def test_sampling_seed_matters_only_when_subsampling(models):
    content, big, small = rand_images(1, 3, 32, 32), rand_images(1, 3, 272, 272, seed=1), rand_images(1, 3, 64, 64)
    a = run(models, "official-image", content, big, options=StylizeOptions(sampling=Sampling("official", 1)))
    b = run(models, "official-image", content, big, options=StylizeOptions(sampling=Sampling("official", 2)))
    assert (a - b).abs().max() > 1e-4
    c = run(models, "official-image", content, small, options=StylizeOptions(sampling=Sampling("official", 1)))
    d = run(models, "official-image", content, small, options=StylizeOptions(sampling=Sampling("official", 2)))
    assert torch.equal(c, d)


# --- the core's styles, regions, masks and colour modes ------------------------------------------


def test_weights_argument_equals_weighted_styles(models):
    content, s1, s2 = rand_images(1, 3, 32, 48, seed=1), rand_images(1, 3, 40, 40, seed=2), rand_images(1, 3, 32, 32)
    a = run(models, "lite", content, [s1, s2], weights=[1.0, 3.0])
    b = run(models, "lite", content, [Style(s1, 1.0), Style(s2, 3.0)])
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="2 style weights for 1 styles"):
        run(models, "lite", content, s1, weights=[1.0, 2.0])


def test_a_style_whose_region_is_empty_leaves_the_other_alone(models):
    content, s1, s2 = rand_images(1, 3, 32, 48, seed=1), rand_images(1, 3, 40, 40, seed=2), rand_images(1, 3, 32, 32)
    ones = torch.ones(1, 32, 48)
    out = run(models, "lite", content, [Style(s1, region=ones), Style(s2, region=0 * ones)])
    torch.testing.assert_close(out, run(models, "lite", content, s1))
    with pytest.raises(ValueError, match=r"region of style 2 has shape \[1, 8, 8\]"):
        run(models, "lite", content, [Style(s1), Style(s2, region=torch.ones(1, 8, 8))])


def test_an_empty_content_mask_decodes_the_content_features(models):
    content, style = rand_images(1, 3, 32, 48, seed=1), rand_images(1, 3, 40, 40, seed=2)
    masked = run(models, "official-image", content, style, mask=torch.zeros(1, 32, 48))
    torch.testing.assert_close(masked, run(models, "official-image", content, style, options=StylizeOptions(alpha=0)))


@pytest.mark.parametrize("color", ["luminance", "match"])
def test_colour_modes_pair_and_chunk_like_single_images(models, color):
    contents, styles = rand_images(3, 3, 32, 32, seed=1), rand_images(3, 3, 40, 40, seed=2)
    options = StylizeOptions(color=color)
    paired = run(models, "lite", contents, styles, options=options, content_chunk=2)
    for i in range(3):
        single = run(models, "lite", contents[i : i + 1], styles[i : i + 1], options=options)
        torch.testing.assert_close(paired[i : i + 1], single)
    shared = run(models, "lite", contents, styles[:1], options=options, content_chunk=3)
    torch.testing.assert_close(shared[2:], run(models, "lite", contents[2:], styles[:1], options=options))


def test_luminance_keeps_the_content_chroma(models):
    from adaattn_model.color import rgb_to_ycbcr

    content, style = rand_images(1, 3, 32, 32, seed=1), rand_images(1, 3, 40, 40, seed=2)
    out = run(models, "lite", content, style, options=StylizeOptions(color="luminance"))
    torch.testing.assert_close(rgb_to_ycbcr(out)[:, 1:], rgb_to_ycbcr(content)[:, 1:], rtol=1e-5, atol=1e-5)


def test_style_max_side_shrinks_the_style_first(models):
    from adaattn_model.images import resize_max_side

    content, style = rand_images(1, 3, 32, 32, seed=1), rand_images(1, 3, 96, 64, seed=2)
    out = run(models, "lite", content, style, options=StylizeOptions(style_max_side=48))
    assert torch.equal(out, run(models, "lite", content, resize_max_side(style, 48)))
    assert not torch.equal(out, run(models, "lite", content, style))


# --- blending, regions and masks (adaattn_layer directly) ---------------------------------------


@pytest.fixture(scope="module")
def encoded(models):
    encoder = models["encoder"]
    with torch.inference_mode():
        content = encode_content(encoder, rand_images(1, 3, 40, 56, seed=1), ("relu4_1",))
        s1 = encode_style(encoder, rand_images(1, 3, 48, 48, seed=2), ("relu4_1",))
        s2 = encode_style(encoder, rand_images(1, 3, 32, 64, seed=3), ("relu4_1",))
    return content, s1, s2


def layer(content, sources, **kw):
    kw.setdefault("spec", AttentionSpec("cosine_softmax", 0.05))
    with torch.inference_mode():
        return adaattn_layer(
            "relu4_1", content, sources, projections=None, sampling=Sampling(), max_sample=65536, **kw
        )


@pytest.mark.parametrize("blend", ["mix", "match"])
def test_one_hot_weights_give_that_style_alone(encoded, blend):
    content, s1, s2 = encoded
    alone = layer(content, [StyleSource(s1)])
    torch.testing.assert_close(layer(content, [StyleSource(s1, 1.0), StyleSource(s2, 0.0)], blend=blend), alone)


def test_mix_interpolates_the_moments(encoded):
    """mix: mean and E[v^2] are the weighted sums of each style's."""
    content, s1, s2 = encoded
    spec = AttentionSpec("cosine_softmax", 0.05)
    from adaattn_model.adaattn import _style_bank, flatten_positions
    from adaattn_model.attention import attended_moments, moments_to_mean_std, prepare_query
    from adaattn_model.functional import mean_variance_norm

    q = prepare_query(flatten_positions(content.keys["relu4_1"]), spec)
    m = [attended_moments(q, [_style_bank(StyleSource(s), 0, "relu4_1", None, spec, Sampling(), 65536)], spec)
         for s in (s1, s2)]  # fmt: skip
    mean, std = moments_to_mean_std(0.25 * m[0] + 0.75 * m[1])
    fc = content.features["relu4_1"]
    want = (std * flatten_positions(mean_variance_norm(fc)) + mean).t().reshape(fc.shape)
    got = layer(content, [StyleSource(s1, 1.0), StyleSource(s2, 3.0)], blend="mix")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_match_differs_from_mix(encoded):
    content, s1, s2 = encoded
    mix = layer(content, [StyleSource(s1), StyleSource(s2)], blend="mix")
    match = layer(content, [StyleSource(s1), StyleSource(s2)], blend="match")
    assert (mix - match).abs().max() > 1e-3


def test_regions_give_each_style_its_area(encoded):
    content, s1, s2 = encoded
    h, w = content.size
    left = torch.zeros(1, h, w)
    left[..., : w // 2] = 1.0
    out = layer(content, [StyleSource(s1, region=left), StyleSource(s2, region=1 - left)])
    only1, only2 = layer(content, [StyleSource(s1)]), layer(content, [StyleSource(s2)])
    half = out.shape[-1] // 2
    # away from the boundary (layer maps are area-averaged), each side is that style alone
    torch.testing.assert_close(out[..., : half - 1], only1[..., : half - 1])
    torch.testing.assert_close(out[..., half + 1 :], only2[..., half + 1 :])


def test_uncovered_positions_keep_the_incoming_feature(encoded):
    content, s1, _ = encoded
    h, w = content.size
    top = torch.zeros(1, h, w)
    top[:, : h // 2] = 1.0
    out = layer(content, [StyleSource(s1, region=top)])
    fc = content.features["relu4_1"]
    rows = out.shape[-2] // 2
    torch.testing.assert_close(out[..., rows + 1 :, :], fc[..., rows + 1 :, :])
    assert not torch.allclose(out[..., : rows - 1, :], fc[..., : rows - 1, :])


def test_content_mask_and_strength(encoded):
    content, s1, _ = encoded
    full = layer(content, [StyleSource(s1)])
    fc = content.features["relu4_1"]
    zero = layer(content, [StyleSource(s1)], region=torch.zeros(1, *content.size))
    torch.testing.assert_close(zero, fc)
    half = layer(content, [StyleSource(s1)], strength=0.5)
    torch.testing.assert_close(half, fc + 0.5 * (full - fc), rtol=1e-5, atol=1e-5)


def test_style_mask_restricts_attention(encoded):
    content, s1, _ = encoded
    h, w = s1.size
    mask = torch.zeros(1, h, w)
    mask[:, :, : w // 2] = 1.0
    masked = layer(content, [StyleSource(s1, mask=mask)])
    assert (masked - layer(content, [StyleSource(s1)])).abs().max() > 1e-3
    with pytest.raises(ValueError, match="style mask leaves no style position"):
        layer(content, [StyleSource(s1, mask=torch.zeros(1, h, w))])


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"region": torch.ones(1, 5, 5)}, r"region map of style 1 has shape \[1, 5, 5\]"),
        ({"mask": torch.ones(2, 48, 48)}, r"style mask of style 1 has shape"),
        ({"weight": -1.0}, "negative or NaN weight"),
        ({"region": -torch.ones(1, 40, 56)}, "must hold finite values >= 0"),
    ],
)
def test_bad_maps_and_weights(encoded, kw, message):
    content, s1, _ = encoded
    with pytest.raises(ValueError, match=message):
        layer(content, [StyleSource(s1, **kw)])


def test_bfloat16_model_matches_float32_within_tolerance(release):
    """Half-precision weights/activations with float32 statistics: mean abs error <= 0.02 on [0,1] images."""
    from adaattn_model.weights import load_encoder, load_model

    out = release["out"]
    content, style = rand_images(1, 3, 64, 64, seed=1), rand_images(1, 3, 64, 64, seed=2)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        enc = load_encoder(out / "vgg_normalised.safetensors", dtype=dtype)
        model = load_model(out / "adaattn_official.safetensors", dtype=dtype)
        with torch.inference_mode():
            results[dtype] = stylize(model, enc, content, style).float()
    err = (results[torch.float32] - results[torch.bfloat16]).abs()
    assert err.mean() <= 0.02 and err.max() <= 0.25


@pytest.mark.parametrize("with_cache", [False, True])
def test_a_layers_keys_are_let_go_once_it_is_stylised(models, monkeypatch, with_cache):
    """Without a cache, the content's and the style's keys of a layer are freed before the next layer
    runs (at 1024x1024 they are about 0.5 GB); a cache keeps them for the next run."""
    import weakref

    from adaattn_model import pipeline
    from adaattn_model.encoding_cache import EncodingCache

    real, refs, alive = pipeline.stylize_layer, {}, {}

    def spy(model, layer, content, sources, *args, **kwargs):
        alive[layer] = [ref() is not None for earlier in refs.values() for ref in earlier]
        refs[layer] = (weakref.ref(content.keys[layer]), weakref.ref(sources[0].style.keys[layer]))
        return real(model, layer, content, sources, *args, **kwargs)

    monkeypatch.setattr(pipeline, "stylize_layer", spy)
    cache = EncodingCache(2**30) if with_cache else None
    content, style = rand_images(1, 3, 64, 64, seed=1), rand_images(1, 3, 64, 64, seed=2)
    with torch.inference_mode():
        pipeline.stylize(models["official-image"], models["encoder"], content, style, cache=cache)
    assert alive == {"relu3_1": [], "relu4_1": [with_cache] * 2, "relu5_1": [with_cache] * 4}
