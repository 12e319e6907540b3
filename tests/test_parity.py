"""Fidelity: the float32 engine equals a float64 oracle of the reference (tests/oracle.py).

Tolerances from the spec: max abs error <= 5e-4, mean abs error <= 2e-5 on the output
image, with weights in the reference layout converted by our converter.
"""

from __future__ import annotations

import oracle
import pytest
import torch
from conftest import double_state, rand_images

from adaattn_model.adaattn import StyleSource
from adaattn_model.features import from_taps
from adaattn_model.model import LITE_DETAIL, LITE_GLOBAL_SHARE
from adaattn_model.pipeline import StylizeOptions, Stylizer, decode_image, encode_content, stylize_features
from adaattn_model.sampling import Sampling
from adaattn_model.vgg import TAPS

MAX_ERR, MEAN_ERR = 5e-4, 2e-5


def assert_parity(ours, ref):
    assert ours.shape == ref.shape
    err = (ours.double() - ref).abs()
    assert err.max().item() <= MAX_ERR, f"max abs error {err.max().item():.3g}"
    assert err.mean().item() <= MEAN_ERR, f"mean abs error {err.mean().item():.3g}"
    assert ref.std() > 0.01  # the comparison is not between two flat images


def run(models, family, content, style, mode, **kw):
    """Through the one core, as the command line and the nodes run it (a Stylizer and its cache)."""
    options = StylizeOptions(sampling=Sampling(mode), **kw)
    with torch.inference_mode():
        return Stylizer(models["encoder"], models[family]).stylize(content, style, options=options)


def image_oracle(release, content, style, exact=False):
    s = release["states"]
    return oracle.image_model(
        double_state(s["vgg"]),
        double_state(s["relu3_1_attention"]),
        double_state(s["transformer"]),
        double_state(s["image_decoder"]),
        content.double(),
        style.double(),
        exact=exact,
    )


@pytest.mark.parametrize(
    "content_shape, style_shape",
    [
        ((1, 3, 64, 64), (1, 3, 64, 64)),  # square, no subsampling anywhere
        ((1, 3, 48, 80), (1, 3, 96, 72)),  # non-square content and style
        ((1, 3, 64, 96), (1, 3, 272, 280)),  # relu3_1 style map 68x70 > 4096: subsampled at relu3_1 only
        ((3, 3, 32, 48), (1, 3, 80, 64)),  # a batch of contents with one style
    ],
)
def test_image_model_official_matches_reference(release, models, content_shape, style_shape):
    content, style = rand_images(*content_shape, seed=1), rand_images(*style_shape, seed=2)
    assert_parity(run(models, "official-image", content, style, "official"), image_oracle(release, content, style))


@pytest.mark.slow
def test_image_model_official_subsamples_relu4_1_too(release, models):
    """relu4_1 of a 2064x2064 style is 258x258 = 66564 > 65536 positions: both layers subsample.

    A float64 VGG at that size needs ~20 GB (im2col), so the style's VGG taps are computed
    once in float32 and shared; everything after them (keys, sampling, attention at three
    layers, fusion, decoder, and the content's whole VGG) is compared as usual.
    """
    content, style = rand_images(1, 3, 32, 32, seed=3), rand_images(1, 3, 2064, 2064, seed=4)
    encoder, model = models["encoder"], models["official-image"]
    with torch.inference_mode():
        taps = encoder.taps(style)
        encoded_style = from_taps(taps.items(), style.shape[-2:], model.family.layers, size=style.shape[-2:])
        assert encoded_style.features["relu4_1"][0, 0].numel() == 258 * 258
        encoded_content = encode_content(encoder, content, model.family.layers)
        options = StylizeOptions(sampling=Sampling("official"))
        feats = stylize_features(model, encoded_content, [StyleSource(encoded_style)], options)
        ours = decode_image(model, feats, encoded_content)
    style_feats = [taps[t].double() for t in TAPS]
    del taps, encoded_style
    s = release["states"]
    ref = oracle.image_model(
        double_state(s["vgg"]), double_state(s["relu3_1_attention"]), double_state(s["transformer"]),
        double_state(s["image_decoder"]), content.double(), None, style_feats=style_feats,
    )  # fmt: skip
    assert_parity(ours, ref)


def test_exact_mode_matches_unsampled_reference(release, models):
    content, style = rand_images(1, 3, 64, 48, seed=5), rand_images(1, 3, 272, 272, seed=6)
    ours = run(models, "official-image", content, style, "exact")
    assert_parity(ours, image_oracle(release, content, style, exact=True))
    # and official mode really differs here (relu3_1 is subsampled), so the test can tell them apart
    assert (ours - run(models, "official-image", content, style, "official")).abs().max() > 1e-3


@pytest.mark.parametrize("content_shape", [(1, 3, 64, 128), (2, 3, 36, 52)])
def test_video_model_matches_reference(release, models, content_shape):
    content, style = rand_images(*content_shape, seed=7), rand_images(1, 3, 96, 96, seed=8)
    s = release["states"]
    ref = oracle.video_model(
        double_state(s["vgg"]),
        double_state(s["video_relu3_1_attention"]),
        double_state(s["video_video_decoder"]),
        content.double(),
        style.double(),
    )
    # The video decoder has no size constraint; our padding to 16 must not change a legal size.
    if content_shape[-1] % 16 == 0 and content_shape[-2] % 16 == 0:
        assert_parity(run(models, "official-video", content, style, "official"), ref)
    else:
        out = run(models, "official-video", content, style, "official")
        assert out.shape == content.shape  # exact input size back, whatever the padding


@pytest.mark.parametrize(
    "kind, chosen, temperature, share, detail",
    [
        ("auto", None, 0.03, None, None),  # the family's defaults: share and detail included
        ("cosine_softmax", 0.1, 0.1, 0.0, 0.0),  # AdaAttN as published
        ("softmax", None, 1.0, 0.3, 1.0),
        ("auto", None, 0.03, 1.0, 0.0),  # uniform attention
    ],
)
def test_lite_model_matches_its_oracle(release, models, kind, chosen, temperature, share, detail):
    content, style = rand_images(1, 3, 48, 64, seed=9), rand_images(1, 3, 80, 80, seed=10)
    s = release["states"]
    ref = oracle.lite_model(
        double_state(s["vgg"]),
        double_state(s["adain_decoder"]),
        content.double(),
        style.double(),
        kind="cosine_softmax" if kind == "auto" else kind,
        temperature=temperature,
        global_share=LITE_GLOBAL_SHARE if share is None else share,
        detail=LITE_DETAIL if detail is None else detail,
    )
    ours = run(models, "lite", content, style, "exact", attention=kind, temperature=chosen, global_share=share,
               detail=detail)  # fmt: skip
    assert_parity(ours, ref)


def test_cosine_attention_on_image_model_matches_oracle(release, models):
    """The video model's cosine attention applied with the image model's weights."""
    content, style = rand_images(1, 3, 64, 64, seed=11), rand_images(1, 3, 64, 64, seed=12)
    s = {k: double_state(v) for k, v in release["states"].items()}
    cf, sf = oracle.vgg_features(s["vgg"], content.double()), oracle.vgg_features(s["vgg"], style.double())
    inf = float("inf")
    kw = dict(max_sample=inf, seed=0, kind="cosine")
    a3 = oracle.adaattn(cf[2], sf[2], oracle.key(cf, 2), oracle.key(sf, 2), s["relu3_1_attention"], **kw)
    t = s["transformer"]
    p4 = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("attn_adain_4_1")}
    p5 = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("attn_adain_5_1")}
    a4 = oracle.adaattn(cf[3], sf[3], oracle.key(cf, 3), oracle.key(sf, 3), p4, **kw)
    a5 = oracle.adaattn(cf[4], sf[4], oracle.key(cf, 4), oracle.key(sf, 4), p5, **kw)
    merged = oracle.conv(oracle.pad(a4 + oracle.up(a5)), t, "merge_conv")
    d = s["image_decoder"]
    x = oracle.up(torch.relu(oracle.conv(oracle.pad(merged), d, "decoder_layer_1.1")))
    ref = oracle.decoder_tail(torch.cat([x, a3], 1), d, "decoder_layer_2.")
    ours = run(models, "official-image", content, style, "exact", attention="cosine")
    assert_parity(ours, ref)
