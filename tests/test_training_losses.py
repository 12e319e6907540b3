"""Training losses and the differentiable forward pass against a float64 oracle of the reference.

The oracle below restates the reference losses (training recipe: relu2_1..relu5_1, unbiased
variance + 1e-5, nearest-resized shallow keys, sums over layers, no 1/sqrt(d), a local target
from parameter-free attention without gradient) on top of tests/oracle.py, in float64, with
the weights in the released layouts. Values and gradients of every parameter are compared.
"""

from __future__ import annotations

import copy

import oracle
import pytest
import torch
import torch.nn.functional as F
from conftest import double_state, rand_images

from adaattn_model.adaattn import StyleSource, attention_statistics
from adaattn_model.attention import AttentionSpec
from adaattn_model.functional import mean_variance_norm
from adaattn_model.model import AdaAttNModel
from adaattn_model.pipeline import StylizeOptions, stylize
from adaattn_model.sampling import Sampling
from adaattn_model.tools.convert import LAYOUTS, OUTPUTS
from adaattn_model.training import LossWeights, encode_layers, losses, stylize_train
from adaattn_model.training.losses import local_target, similarity_loss
from adaattn_model.weights import read_weights

INF = float("inf")
ORACLE_LAYERS = (1, 2, 3, 4)  # relu2_1 .. relu5_1 in oracle.vgg_features' list


def trainable(release, family, dtype=torch.float32):
    """Our model in training mode, with the release's (random) weights."""
    _, tensors, _ = read_weights(release["out"] / OUTPUTS[family][0])
    model = AdaAttNModel(family)
    model.load_state_dict(tensors)
    return model.to(dtype).train().requires_grad_(True)


def encoder64(models):
    return copy.deepcopy(models["encoder"]).double()


def released_params(release, family):
    """The model's tensors in the released layouts, float64 leaves requiring grad."""
    s = release["states"]
    names = {"official-image": ("relu3_1_attention", "transformer", "image_decoder"),
             "official-video": ("video_relu3_1_attention", "video_video_decoder")}[family]  # fmt: skip
    return {n: {k: v.double().requires_grad_(True) for k, v in s[n].items()} for n in names}


def ours_to_released(family):
    """Our parameter name -> (released layout, released name)."""
    layouts = OUTPUTS[family][1]
    prefix = {"official-video": "video_"}.get(family, "")
    table = {}
    for layout in layouts:
        for src, dst in LAYOUTS[layout][0].items():
            for p in ("weight", "bias"):
                table[f"{dst}.{p}"] = (prefix + layout, f"{src}.{p}")
    return table


def oracle_mean_std(x):
    return oracle.calc_mean_std(x)


def oracle_losses(vgg, output, content, style, seed, weights, layers=ORACLE_LAYERS):
    limit = INF if seed is None else 4096
    cf, sf, of = oracle.vgg_features(vgg, content), oracle.vgg_features(vgg, style), oracle.vgg_features(vgg, output)
    glob = loc = cont = 0
    for i in layers:
        mo, so = oracle_mean_std(of[i])
        ms, ss = oracle_mean_std(sf[i])
        glob = glob + F.mse_loss(mo, ms) + F.mse_loss(so, ss)
        with torch.no_grad():
            target = oracle.adaattn(cf[i], sf[i], oracle.key(cf, i), oracle.key(sf, i), None, max_sample=limit,
                                    seed=seed if seed is not None else 0)  # fmt: skip
        loc = loc + F.mse_loss(of[i], target)
        cont = cont + F.mse_loss(oracle.mvn(of[i]), oracle.mvn(cf[i]))
    return {"content": weights.content * cont, "global": weights.global_ * glob, "local": weights.local * loc}


def image_oracle_output(vgg, params, content, style, seed):
    return oracle.image_model(vgg, params["relu3_1_attention"], params["transformer"], params["image_decoder"],
                              content, style, seed=seed if seed is not None else 0, exact=seed is None)  # fmt: skip


def compare(ours_terms, model, ref_terms, params, family, rtol=1e-6):
    for name, ref in ref_terms.items():
        got = ours_terms[name].item()
        assert got == pytest.approx(ref.item(), rel=rtol, abs=1e-7), name
    sum(ours_terms.values()).backward()
    sum(ref_terms.values()).backward()
    table = ours_to_released(family)
    checked = 0
    for name, p in model.named_parameters():
        layout, ref_name = table[name]
        ref_grad = params[layout][ref_name].grad
        assert p.grad is not None, name
        scale = ref_grad.abs().max().item()
        err = (p.grad.double() - ref_grad).abs().max().item()
        assert err <= rtol * scale + 1e-9, f"{name}: gradient error {err:.3g} vs scale {scale:.3g}"
        checked += 1
    assert checked == len(list(model.parameters()))


@pytest.mark.parametrize(
    "seed, content_shape, style_shape",
    [
        (None, (2, 3, 32, 48), (2, 3, 64, 64)),  # exact
        (1234, (1, 3, 32, 32), (1, 3, 264, 264)),  # subsampled: relu2_1 local (17424) and relu3_1 forward (4356)
    ],
)
def test_image_losses_and_gradients_match_oracle(release, models, seed, content_shape, style_shape):
    content, style = rand_images(*content_shape, seed=11), rand_images(*style_shape, seed=12)
    weights = LossWeights(content=0.5, global_=10.0, local=3.0)  # content on, so its gradient is checked too
    model = trainable(release, "official-image", torch.float64)
    ours = losses(model, encoder64(models), content.double(), style.double(), weights=weights, seed=seed)
    assert set(ours) == {"content", "global", "local"}
    assert all(t.requires_grad for t in ours.values())
    vgg = double_state(release["states"]["vgg"])
    params = released_params(release, "official-image")
    out = image_oracle_output(vgg, params, content.double(), style.double(), seed)
    ref = oracle_losses(vgg, out, content.double(), style.double(), seed, weights)
    compare(ours, model, ref, params, "official-image")


def test_seeded_losses_differ_from_exact_and_depend_on_seed(release, models):
    content, style = rand_images(1, 3, 32, 32, seed=13), rand_images(1, 3, 144, 144, seed=14)  # relu2_1: 5184
    model = trainable(release, "official-image")
    with torch.no_grad():
        exact = losses(model, models["encoder"], content, style)["local"]
        a = losses(model, models["encoder"], content, style, seed=1)["local"]
        a2 = losses(model, models["encoder"], content, style, seed=1)["local"]
        b = losses(model, models["encoder"], content, style, seed=2)["local"]
    assert a.item() == a2.item()
    assert abs(a.item() - exact.item()) > 1e-6 * abs(exact.item())
    assert abs(a.item() - b.item()) > 1e-6 * abs(a.item())


def test_video_losses_and_gradients_match_oracle(release, models):
    content, style = rand_images(2, 3, 40, 36, seed=15), rand_images(2, 3, 48, 56, seed=16)
    weights = LossWeights(content=1.0)
    model = trainable(release, "official-video", torch.float64)
    ours = losses(model, encoder64(models), content.double(), style.double(), weights=weights, seed=7)
    vgg = double_state(release["states"]["vgg"])
    params = released_params(release, "official-video")
    out = oracle.video_model(vgg, params["video_relu3_1_attention"], params["video_video_decoder"],
                             content.double(), style.double())  # fmt: skip
    ref = oracle_losses(vgg, out, content.double(), style.double(), 7, weights, layers=(1, 2))
    compare(ours, model, ref, params, "official-video")


def oracle_similarity(c1, c2, o1, o2):
    def pattern(a, b):
        a, b = a.flatten(2), b.flatten(2)  # [N, C, n]
        cos = torch.einsum("nci,ncj->nij", a, b) / (a.norm(dim=1)[:, :, None] * b.norm(dim=1)[:, None, :])
        d = 1 - cos
        return d / d.sum(dim=1, keepdim=True).clamp_min(d.shape[1] * 1e-3)

    return sum((pattern(o1[i], o2[i]) - pattern(c1[i], c2[i])).abs().mean() for i in (2, 3, 4))


def test_similarity_loss_matches_oracle_and_is_zero_for_identical_patterns(models):
    encoder = models["encoder"]
    c1, c2, o1, o2 = (rand_images(2, 3, 48, 48, seed=s) for s in (20, 21, 22, 23))
    feats = [dict(encoder.taps(x)) for x in (c1, c2, o1, o2)]
    got = similarity_loss(*feats)
    ref = oracle_similarity(*[[f[t].double() for t in f] for f in feats])
    assert got.item() == pytest.approx(ref.item(), rel=1e-4)
    assert similarity_loss(feats[0], feats[1], feats[0], feats[1]).item() == 0.0


def test_video_pair_adds_weighted_similarity(release, models):
    content, pair = rand_images(1, 3, 32, 32, seed=24), rand_images(1, 3, 32, 32, seed=25)
    style = rand_images(1, 3, 40, 40, seed=26)
    model = trainable(release, "official-video")
    w1 = losses(model, models["encoder"], content, style, pair=pair, weights=LossWeights(similarity=1.0))
    w5 = losses(model, models["encoder"], content, style, pair=pair, weights=LossWeights(similarity=5.0))
    assert set(w1) == {"content", "global", "local", "similarity"}
    assert w1["similarity"].item() > 0
    assert w5["similarity"].item() == pytest.approx(5 * w1["similarity"].item(), rel=1e-5)
    w1["similarity"].backward()
    assert model.decoder.conv1_1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [None, 3])
def test_local_target_is_parameter_free_attention(models, seed):
    """The local-loss target equals the engine's parameter-free AdaAttN with shallow keys, and the oracle's."""
    content, style = rand_images(2, 3, 32, 40, seed=27), rand_images(2, 3, 136, 136, seed=28)  # relu2_1: 4624
    encoder = models["encoder"]
    sampling = Sampling() if seed is None else Sampling("official", seed)
    enc_c = encode_layers(encoder, content, ("relu2_1", "relu3_1"))
    enc_s = encode_layers(encoder, style, ("relu2_1", "relu3_1"))
    enc64 = encoder64(models)
    cf = list(enc64.taps(content.double()).values())
    sf = list(enc64.taps(style.double()).values())
    for layer, i in (("relu2_1", 1), ("relu3_1", 2)):
        target = local_target(enc_c, enc_s, layer, sampling)
        assert not target.requires_grad
        ref = oracle.adaattn(cf[i], sf[i], oracle.key(cf, i), oracle.key(sf, i), None,
                             max_sample=INF if seed is None else 4096, seed=seed)  # fmt: skip
        target64 = local_target(encode_layers(enc64, content.double(), (layer,)),
                                encode_layers(enc64, style.double(), (layer,)), layer, sampling)  # fmt: skip
        torch.testing.assert_close(target64, ref, rtol=1e-7, atol=1e-7)
        for b in range(2):  # the engine's parameter-free layer (its max_sample is per call)
            stats = attention_statistics(
                layer, enc_c.take(b), [StyleSource(enc_s.take(b))], projections=None,
                spec=AttentionSpec("softmax"), sampling=sampling, max_sample=4096,
            )  # fmt: skip
            engine = stats.std * mean_variance_norm(enc_c.features[layer][b : b + 1]) + stats.mean
            # float32 both, summed in other orders; shallow-key logits reach ~100, so softmax amplifies round-off
            torch.testing.assert_close(target[b : b + 1], engine, rtol=5e-3, atol=5e-3)


def test_forward_without_grad_equals_inference_engine(release, models):
    """The differentiable forward gives the engine's stylize output (legal sizes, both sampling modes)."""
    content, style = rand_images(2, 3, 32, 48, seed=30), rand_images(2, 3, 264, 264, seed=31)  # relu3_1: 4356
    for family in ("official-image", "official-video"):
        model = trainable(release, family)
        for mode in ("exact", "official"):
            sampling = Sampling(mode, 99)
            with torch.no_grad():
                enc_c = encode_layers(models["encoder"], content, model.family.layers)
                enc_s = encode_layers(models["encoder"], style, model.family.layers)
                ours = stylize_train(model, enc_c, enc_s, sampling)
            engine_model = models[family]
            with torch.inference_mode():
                ref = torch.cat([stylize(engine_model, models["encoder"], content[b : b + 1], style[b : b + 1],
                                         options=StylizeOptions(sampling=sampling)) for b in range(2)])  # fmt: skip
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_checkpointed_forward_gives_the_same_gradients(release, models):
    content, style = rand_images(1, 3, 32, 32, seed=32), rand_images(1, 3, 48, 48, seed=33)
    grads = []
    for ckpt in (False, True):
        model = trainable(release, "official-image")
        enc_c = encode_layers(models["encoder"], content, model.family.layers)
        enc_s = encode_layers(models["encoder"], style, model.family.layers)
        stylize_train(model, enc_c, enc_s, checkpoint_activations=ckpt).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layers", [("relu1_1", "relu2_1"), ("relu6_1",), ()])
def test_refuses_bad_loss_layers(release, models, layers):
    model = trainable(release, "official-image")
    content, style = rand_images(1, 3, 32, 32, seed=34), rand_images(1, 3, 32, 32, seed=35)
    with pytest.raises(ValueError, match="layer"):
        losses(model, models["encoder"], content, style, loss_layers=layers)


def test_refuses_parameter_free_family_and_unpaired_batches(release, models):
    content, style = rand_images(2, 3, 32, 32, seed=36), rand_images(1, 3, 32, 32, seed=37)
    with pytest.raises(ValueError, match="one style per content"):
        losses(trainable(release, "official-image"), models["encoder"], content, style)
    with pytest.raises(ValueError, match="no trainable attention"):
        losses(models["lite"], models["encoder"], content, style.expand(2, -1, -1, -1))


def test_bf16_autocast_gives_finite_losses_near_float32(release, models):
    """--amp bf16: convs run in bfloat16, attention and losses stay float32."""
    content, style = rand_images(2, 3, 32, 32, seed=40), rand_images(2, 3, 48, 48, seed=41)
    model = trainable(release, "official-image")
    exact = losses(model, models["encoder"], content, style, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = losses(model, models["encoder"], content, style, seed=1)
    assert all(t.dtype == torch.float32 for t in mixed.values())
    for name in ("global", "local"):
        assert mixed[name].item() == pytest.approx(exact[name].item(), rel=0.1)
    sum(mixed.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
