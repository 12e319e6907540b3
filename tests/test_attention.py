"""The memory-bounded attention kernel: chunked equals materialised, masks, weights, memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from adaattn_model import attention
from adaattn_model.attention import (
    AttentionSpec,
    attended_moments,
    chunk_shape,
    make_bank,
    moments_to_mean_std,
    prepare_query,
)


def materialised(q, banks_kv, spec, row_weights=None, col_weights=None):
    """softmax/cosine over the union of banks, built in full, in float64."""
    q = q.double()
    ks = torch.cat([k for k, _ in banks_kv]).double()
    vs = torch.cat([v for _, v in banks_kv]).double()
    if spec.normalized:
        q = q / (q.norm(dim=1, keepdim=True) + 1e-5)
        ks = ks / (ks.norm(dim=1, keepdim=True) + 1e-5)
    logits = q @ ks.t()
    w = torch.ones_like(logits)
    if col_weights is not None:
        w = w * torch.cat(col_weights).double()[None]
    if row_weights is not None:
        w = w * torch.cat([rw.double()[:, None].expand(-1, k.shape[0]) for rw, (k, _) in zip(row_weights, banks_kv)], 1)
    if spec.kind == "cosine":
        s = torch.relu(logits + 1) * w
        a = s / (s.sum(1, keepdim=True) + 1e-5)
    else:
        a = torch.softmax(logits / spec.temperature + w.log(), dim=1)
    return torch.cat([a @ vs, a @ vs**2], dim=1)


def data(n_c=70, n_s=(90,), d=12, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n_c, d, generator=g)
    banks = [(torch.randn(n, d, generator=g) * 0.5, torch.randn(n, c, generator=g)) for n in n_s]
    return q, banks


@pytest.fixture
def tiny_floor(monkeypatch):
    """The kernel's budget floor is 1 MiB; lower it so tiny problems really get chunked."""
    monkeypatch.setattr(attention, "MIN_BUDGET_BYTES", 4)


SPECS = [AttentionSpec("softmax"), AttentionSpec("cosine"), AttentionSpec("cosine_softmax", 0.05)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
@pytest.mark.parametrize("budget", [1 << 30, 4 * 70 * 90, 4 * 64 * 7, 4 * 3])  # whole, rows only, both, tiny
def test_chunked_equals_materialised(spec, budget, tiny_floor):
    q, banks_kv = data()
    banks = [make_bank(k, v, spec) for k, v in banks_kv]
    got = attended_moments(prepare_query(q, spec), banks, spec, budget_bytes=budget)
    want = materialised(q, banks_kv, spec)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=2e-5)


def test_chunk_shape_follows_budget():
    assert chunk_shape(10_000, 500, 4 * 500 * 100) == (100, 500)  # whole rows
    assert chunk_shape(10_000, 10**6, 4 * 64 * 1000) == (64, 1000)  # rows too long: columns split
    assert chunk_shape(5, 10, 1 << 30) == (5, 10)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_several_banks_with_row_and_column_weights(spec, tiny_floor):
    q, banks_kv = data(n_s=(40, 25, 60), seed=1)
    g = torch.Generator().manual_seed(2)
    cols = [torch.rand(k.shape[0], generator=g) for k, _ in banks_kv]
    cols[1][:10] = 0  # masked-out style positions
    rows = [torch.rand(q.shape[0], generator=g) for _ in banks_kv]
    rows[2][:5] = 0  # bank 2 unused for the first rows
    banks = [make_bank(k, v, spec, c) for (k, v), c in zip(banks_kv, cols)]
    got = attended_moments(prepare_query(q, spec), banks, spec, row_weights=rows, budget_bytes=4 * 64 * 16)
    torch.testing.assert_close(got.double(), materialised(q, banks_kv, spec, rows, cols), rtol=1e-5, atol=2e-5)


def test_rows_with_all_weights_zero_get_zero_moments():
    q, banks_kv = data(n_s=(30,))
    spec = AttentionSpec("softmax")
    rows = [torch.ones(q.shape[0])]
    rows[0][:4] = 0
    got = attended_moments(q, [make_bank(*banks_kv[0], spec)], spec, row_weights=rows)
    assert torch.isfinite(got).all()
    assert (got[:4] == 0).all() and (got[4:] != 0).any()


def test_logits_far_below_the_row_maximum_weigh_exactly_zero(monkeypatch):
    """Logits spread over hundreds (large features, softmax): weights that would be subnormal floats are
    exact zeros (they made the CPU's exp and products 10-50x slower), and the moments still equal the
    float64 softmax, and the kernel's result with subnormals kept, to round-off."""
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(64, 48, generator=g) * 2, torch.randn(300, 48, generator=g) * 2
    v = torch.randn(300, 6, generator=g)
    spec = AttentionSpec("softmax")
    logits = q.double() @ k.double().t()
    spread = logits - logits.amax(dim=1, keepdim=True)
    assert ((spread < attention.SUBNORMAL_LOGIT) & (spread > -103)).float().mean() > 0.1  # subnormal in fp32
    got = attended_moments(prepare_query(q, spec), [make_bank(k, v, spec)], spec)
    torch.testing.assert_close(got.double(), materialised(q, [(k, v)], spec), rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(attention, "SUBNORMAL_LOGIT", -float("inf"))  # keep subnormal weights
    kept = attended_moments(prepare_query(q, spec), [make_bank(k, v, spec)], spec)
    torch.testing.assert_close(got, kept, rtol=1e-6, atol=1e-7)


def test_std_in_place_equals_the_autograd_form():
    moments = torch.rand(40, 8) + torch.tensor([0.0] * 4 + [1.0] * 4)
    leaf = moments.clone().requires_grad_(True)
    mean, std = moments_to_mean_std(leaf)
    in_place_mean, in_place_std = moments_to_mean_std(moments.clone())
    assert torch.equal(mean.detach(), in_place_mean) and torch.equal(std.detach(), in_place_std)
    std.sum().backward()
    assert leaf.grad is not None


def test_std_is_sqrt_of_relu_variance_without_eps():
    moments = torch.tensor([[1.0, 2.0, 1.0 + 1e-9, 5.0]])  # second < mean**2 by round-off in the first channel
    mean, std = moments_to_mean_std(moments)
    assert mean.tolist() == [[1.0, 2.0]]
    torch.testing.assert_close(std, torch.tensor([[0.0, 1.0]]))


def test_large_problem_stays_within_budget():
    """65536 x 65536 attention (16 GiB as one float32 matrix) in well under 1 GiB of RAM."""
    code = textwrap.dedent(
        """
        import resource, torch
        from adaattn_model.attention import AttentionSpec, attended_moments, make_bank
        torch.set_num_threads(2)
        n, d, c = 65536, 8, 4
        g = torch.Generator().manual_seed(0)
        q = torch.randn(n, d, generator=g)
        spec = AttentionSpec("softmax")
        bank = make_bank(torch.randn(n, d, generator=g), torch.randn(n, c, generator=g), spec)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = attended_moments(q, [bank], spec, budget_bytes=64 * 2**20)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert torch.isfinite(out).all()
        print((peak - base) * 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    extra = int(result.stdout.strip().splitlines()[-1])
    assert extra < 256 * 2**20, f"attention used {extra / 2**20:.0f} MiB beyond its inputs"


def test_out_of_memory_halves_the_budget_and_retries(monkeypatch):
    q, banks_kv = data(n_c=300, n_s=(200,))
    spec = AttentionSpec("softmax")
    banks = [make_bank(k, v, spec) for k, v in banks_kv]
    want = attended_moments(q, banks, spec)
    real_block, calls = attention._moments_block, []

    def flaky_block(q_rows, *args):
        calls.append(q_rows.shape[0])
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_block(q_rows, *args)

    monkeypatch.setattr(attention, "_moments_block", flaky_block)
    monkeypatch.setattr(attention, "MIN_BUDGET_BYTES", 4)
    got = attended_moments(q, banks, spec, budget_bytes=4 * 200 * 300)
    assert calls[0] == 300 and calls[1] == 150  # retried with half the rows
    torch.testing.assert_close(got, want)


def test_other_errors_are_not_retried(monkeypatch):
    q, banks_kv = data()
    spec = AttentionSpec("softmax")

    def broken(*args):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(attention, "_moments_block", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        attended_moments(q, [make_bank(*banks_kv[0], spec)], spec)


def test_budget_follows_the_device():
    from adaattn_model.attention import DEFAULT_BUDGET_BYTES, GPU_MIN_BUDGET_BYTES, budget_for

    assert budget_for(torch.device("cpu")) == DEFAULT_BUDGET_BYTES
    gpu = torch.device("cuda")
    assert budget_for(gpu, free_bytes=8 * 2**30) == 2 * 2**30  # a quarter of what is free
    assert budget_for(gpu, free_bytes=100 * 2**30) == 4 * 2**30  # capped
    assert budget_for(gpu, free_bytes=2**29) == GPU_MIN_BUDGET_BYTES  # floored
