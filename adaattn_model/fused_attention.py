"""Attended moments through ``torch.nn.functional.scaled_dot_product_attention``.

On CUDA, SDPA dispatches to fused kernels (flash, memory-efficient, cuDNN) that never
build the logits and need no chunk loop of ours. The moments come out of one call with
the values ``[v, v**2]`` and an explicit ``scale = 1 / temperature``; a style mask is an
additive ``log(weight)`` bias over the style positions. SDPA expresses the softmax kinds
only: the video model's normalised ``1 + cos`` weights and the per-row bank weights of the
``match`` blend stay on the chunked kernel in :mod:`adaattn_model.attention`, which also
remains the reference path (and the CPU path, where SDPA is no faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import AttentionSpec, StyleBank
from .progress import Progress, expect, step


def rows_per_call(n_cols: int, width: int, budget_bytes: int) -> int:
    """Content rows per call so that a materialised [rows, n_cols] logits block (the math
    fallback) plus its [rows, width] output fit ``budget_bytes`` of float32."""
    return max(1, budget_bytes // (4 * (n_cols + width)))


def can_fuse(banks: Sequence[StyleBank], spec: AttentionSpec, row_weights: Sequence[Tensor | None] | None) -> bool:
    """Whether SDPA can compute this attention exactly (softmax kinds, no per-row weights,
    every row with at least one visible style position)."""
    if spec.kind == "cosine":
        return False
    if row_weights is not None and any(w is not None for w in row_weights):
        return False
    # A style mask that hides every position gives rows with no distribution at all: SDPA
    # returns NaN there, the kernel returns zero moments.
    return all(b.column_weight is None or bool((b.column_weight > 0).any()) for b in banks)


def fused_moments(
    query: Tensor,
    banks: Sequence[StyleBank],
    spec: AttentionSpec,
    *,
    budget_bytes: int,
    progress: Progress | None = None,
) -> Tensor:
    """``[mean, second moment]`` [n_c, 2C] like :func:`attention.attended_moments`, through SDPA.

    Several banks form one softmax over the union of their positions (the ``match`` blend
    without per-row weights). Call only when :func:`can_fuse` holds.
    """
    keys = torch.cat([b.keys for b in banks]) if len(banks) > 1 else banks[0].keys
    values = torch.cat([b.values for b in banks]) if len(banks) > 1 else banks[0].values
    bias = None
    if any(b.column_weight is not None for b in banks):
        weights = [b.column_weight if b.column_weight is not None else keys.new_ones(b.keys.shape[0]) for b in banks]
        bias = torch.cat(weights).float().log()[None, :]  # log 0 = -inf hides a position
    q = query.float()
    k, v = keys[None], values[None]  # one "head": SDPA wants [..., L, E]
    out = torch.empty(q.shape[0], values.shape[1], device=q.device, dtype=torch.float32)
    rows = rows_per_call(keys.shape[0], values.shape[1], budget_bytes)
    expect(progress, -(-q.shape[0] // rows))
    for start in range(0, q.shape[0], rows):
        stop = min(q.shape[0], start + rows)
        out[start:stop] = F.scaled_dot_product_attention(
            q[None, start:stop], k, v, attn_mask=None if bias is None else bias[None], scale=1.0 / spec.temperature
        )[0]
        step(progress)  # checks for a cancel between calls
    return out
