"""The detail step (content's fine luma detail put back) and the global share of the attended
statistics: against float64 oracles, banded = whole, and where they act."""

from __future__ import annotations

import oracle
import pytest
import torch
from conftest import rand_images

from adaattn_model.adaattn import StyleSource, attention_statistics, uniform_moments
from adaattn_model.attention import AttentionSpec, make_bank
from adaattn_model.detail import restore_detail, restore_detail_
from adaattn_model.features import EncodedImage
from adaattn_model.sampling import Sampling


@pytest.mark.parametrize("size", [(40, 33), (257, 61), (5, 7)])
@pytest.mark.parametrize("band_rows", [3, 16, 10_000, None])
def test_restore_detail_matches_the_float64_ycbcr_oracle_in_any_bands(size, band_rows):
    image, content = rand_images(2, 3, *size, seed=1), rand_images(2, 3, *size, seed=2)
    for amount in (0.5, 1.0):
        want = oracle.restore_detail(image.double(), content.double(), amount)
        got = restore_detail(image, content, amount, band_rows=band_rows)
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6)
        # in place, band by band: each band reads its neighbours' rows before they change
        inplace = image.clone()
        assert restore_detail_(inplace, content, amount, band_rows=band_rows) is inplace
        torch.testing.assert_close(inplace.double(), want, rtol=0, atol=2e-6)
    assert (want - image.double()).abs().max() > 0.05  # the step changes the image


def test_restore_detail_zero_keeps_the_image_and_one_takes_the_content_detail():
    image, content = rand_images(1, 3, 20, 24, seed=8), rand_images(1, 3, 20, 24, seed=9)
    assert torch.equal(restore_detail(image, content, 0.0), image)
    torch.testing.assert_close(restore_detail(content, content, 1.0), content)
    # a flat output takes the content's high-pass luma, added to R, G and B alike (chroma kept)
    flat = torch.full_like(content, 0.5)
    out = restore_detail(flat, content, 1.0)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 1], out[:, 2])


@pytest.mark.parametrize(
    "kw, message",
    [({"amount": 1.5}, "detail must be in"), ({"content": torch.zeros(1, 3, 8, 9)}, "two RGB batches of one shape")],
)
def test_restore_detail_refuses_bad_input(kw, message):
    args = {"image": torch.zeros(1, 3, 8, 8), "content": torch.zeros(1, 3, 8, 8), "amount": 0.5, **kw}
    with pytest.raises(ValueError, match=message):
        restore_detail(**args)
    with pytest.raises(ValueError, match="in place on float32"):
        restore_detail_(torch.zeros(1, 3, 8, 8, dtype=torch.float16), torch.zeros(1, 3, 8, 8), 0.5)


def _encoded(seed: int, size: tuple[int, int], channels: int = 8) -> EncodedImage:
    g = torch.Generator().manual_seed(seed)
    feat = torch.rand(1, channels, *size, generator=g) * 3
    key = torch.randn(1, 5, *size, generator=g)
    return EncodedImage({"relu4_1": feat}, {"relu4_1": key}, (size[0] * 8, size[1] * 8), (0, 0, 0, 0))


def _whole(values: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 mean and population std over positions [C, n] (weighted)."""
    v = values.double()
    w = torch.ones(v.shape[1], dtype=torch.float64) if weight is None else weight.double()
    w = w / w.sum()
    mean = v @ w
    return mean, ((v * v) @ w - mean**2).clamp_min(0).sqrt()


@pytest.mark.parametrize("share", [0.0, 0.4, 1.0])
def test_global_share_moves_the_statistics_to_the_whole_styles(share):
    content, style = _encoded(1, (4, 5)), _encoded(2, (6, 3))
    mask = torch.zeros(1, 48, 24)
    mask[:, :24] = 1.0  # the top half of the style only

    def stats(spec, **kw):
        return attention_statistics("relu4_1", content, [StyleSource(style, **kw)], projections=None, spec=spec,
                                    sampling=Sampling(), max_sample=10_000)  # fmt: skip

    for kw, weight in (({}, None), ({"mask": mask}, torch.tensor([1.0] * 9 + [0.0] * 9))):
        local = stats(AttentionSpec("cosine_softmax", 0.05), **kw)
        got = stats(AttentionSpec("cosine_softmax", 0.05, share), **kw)
        mean, std = _whole(style.features["relu4_1"].flatten(2)[0], weight)
        want_mean = (1 - share) * local.mean.double() + share * mean.view(1, -1, 1, 1)
        want_std = (1 - share) * local.std.double() + share * std.view(1, -1, 1, 1)
        torch.testing.assert_close(got.mean.double(), want_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.std.double(), want_std, rtol=1e-5, atol=1e-5)
    if share == 1.0:  # every position gets the same statistics, whatever it attends to
        assert float(got.mean.std(dim=(2, 3)).max()) < 1e-5


def test_uniform_moments_of_two_sources_mix_by_each_positions_weights():
    spec = AttentionSpec("softmax")
    g = torch.Generator().manual_seed(3)
    banks = [make_bank(torch.randn(n, 4, generator=g), torch.rand(n, 3, generator=g), spec) for n in (5, 7)]
    weights = [torch.tensor([1.0, 0.0, 0.25]), torch.tensor([0.0, 2.0, 0.75])]
    got = uniform_moments(banks, weights)
    whole = [b.values.double().mean(dim=0) for b in banks]
    want = torch.stack([whole[0], whole[1], 0.25 * whole[0] + 0.75 * whole[1]])
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
