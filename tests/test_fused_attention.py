"""The fused SDPA path computes the same moments as the chunked kernel and as float64 truth."""

import pytest
import torch

from adaattn_model.attention import AttentionSpec, attended_moments, make_bank, prepare_query
from adaattn_model.fused_attention import can_fuse, fused_moments


def truth(query, banks_kv, spec, column_weights):
    """Materialised float64 softmax over the union of the banks' positions."""
    q = query.double()
    keys = torch.cat([k for k, _ in banks_kv]).double()
    values = torch.cat([v for _, v in banks_kv]).double()
    if spec.normalized:
        q = q / (q.norm(dim=1, keepdim=True) + 1e-5)
        keys = keys / (keys.norm(dim=1, keepdim=True) + 1e-5)
    logits = q @ keys.t() / spec.temperature
    if column_weights is not None:
        logits = logits + torch.cat(column_weights).double().log()
    a = logits.softmax(dim=1)
    return torch.cat([a @ values, a @ values**2], dim=1), logits[torch.isfinite(logits)].abs().max().item()


def case(seed, n_c=200, n_s=(300,), d=24, c=8, masked=False):
    g = torch.Generator().manual_seed(seed)
    kv = [(torch.randn(n, d, generator=g), torch.randn(n, c, generator=g)) for n in n_s]
    query = torch.randn(n_c, d, generator=g)
    weights = None
    if masked:
        weights = [torch.rand(n, generator=g) for n in n_s]
        weights[0][: n_s[0] // 3] = 0  # a third of the first style hidden
    return query, kv, weights


SPECS = [AttentionSpec("softmax", 1.0), AttentionSpec("softmax", 0.25), AttentionSpec("cosine_softmax", 0.03),
         AttentionSpec("cosine_softmax", 2.0)]  # fmt: skip


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.temperature}")
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n_s", [(300,), (300, 170)], ids=["one style", "match of two"])
def test_fused_equals_kernel_and_float64_truth(spec, masked, n_s):
    query, kv, weights = case(1, n_s=n_s, masked=masked)
    banks = [make_bank(k, v, spec, None if weights is None else w) for (k, v), w in zip(kv, weights or [None] * len(kv))]
    q = prepare_query(query, spec)
    assert can_fuse(banks, spec, None)
    fused = fused_moments(q, banks, spec, budget_bytes=2**16)  # several calls of a few rows each
    kernel = attended_moments(q, banks, spec, budget_bytes=2**20, backend="kernel")
    via_dispatch = attended_moments(q, banks, spec, backend="sdpa")
    expected, max_logit = truth(query, kv, spec, weights)
    # float32 round-off: a logit of size L carries an error of about L * eps, and so does each weight
    tolerance = 16 * torch.finfo(torch.float32).eps * (1 + max_logit) * expected.abs().max().item()
    assert (fused.double() - expected).abs().max().item() <= tolerance
    assert (kernel.double() - expected).abs().max().item() <= tolerance
    assert (fused - kernel).abs().max().item() <= 2 * tolerance
    assert torch.equal(via_dispatch, fused_moments(q, banks, spec, budget_bytes=256 * 2**20))


def test_what_sdpa_cannot_express_stays_on_the_kernel():
    query, kv, _ = case(2)
    cosine = AttentionSpec("cosine")
    softmax = AttentionSpec("softmax")
    assert not can_fuse([make_bank(*kv[0], cosine)], cosine, None)  # 1 + cos weights are not a softmax
    bank = make_bank(*kv[0], softmax)
    assert not can_fuse([bank], softmax, [torch.ones(query.shape[0])])  # per-row bank weights of match
    hidden = make_bank(*kv[0], softmax, torch.zeros(kv[0][0].shape[0]))
    assert not can_fuse([hidden], softmax, None)  # every position hidden: the kernel gives zero moments
    # and the dispatch then falls back to the kernel, so the answer is the kernel's
    q = prepare_query(query, cosine)
    cos_bank = make_bank(*kv[0], cosine)
    assert torch.equal(attended_moments(q, [cos_bank], cosine, backend="sdpa"),
                       attended_moments(q, [cos_bank], cosine, backend="kernel"))  # fmt: skip
    assert attended_moments(prepare_query(query, softmax), [hidden], softmax, backend="sdpa").abs().max() == 0


def test_auto_uses_the_kernel_on_the_cpu_and_unknown_backends_are_refused():
    query, kv, _ = case(3)
    spec = AttentionSpec("softmax")
    bank, q = make_bank(*kv[0], spec), prepare_query(query, spec)
    assert torch.equal(attended_moments(q, [bank], spec), attended_moments(q, [bank], spec, backend="kernel"))
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        attended_moments(q, [bank], spec, backend="flash")
