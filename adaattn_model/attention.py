"""Attention-weighted style statistics, in bounded memory.

For every content position i, AdaAttN needs the first two moments of the style values
under an attention distribution A_i over style positions j:

    mean_i = sum_j A_ij v_j        second_i = sum_j A_ij v_j**2

The reference materialises A (n_content x n_style floats per layer, 16 GiB for a 1024^2
image at relu3_1). Here A is never built: rows (content positions) are processed in
chunks sized from a memory budget, and when one row is itself too long, columns (style
positions) are processed in chunks with a running max and normaliser (online softmax),
which is exact. Both moments come from one product with [V, V**2]. Logits, weights and
moments are float32 whatever the model's dtype.

Attention variants (``AttentionSpec.kind``):
  * ``softmax``        softmax_j(q_i . k_j / T): the reference image model (T = 1, learned
                       q, k) and the paper's parameter-free form.
  * ``cosine``         relu(cos(q_i, k_j) + 1) / (sum_j ... + 1e-5): the reference video model.
  * ``cosine_softmax`` softmax_j(cos(q_i, k_j) / T): parameter-free, T sets the locality
                       (large T tends to AdaIN, small T to nearest-patch matching).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .progress import Progress, step, step_work

ATTENTION_KINDS = ("softmax", "cosine", "cosine_softmax")
ATTENTION_BACKENDS = ("auto", "kernel", "sdpa")
NORM_EPS = 1e-5  # added to the L2 norms of q and k, and to the cosine normaliser (reference)
DEFAULT_BUDGET_BYTES = 32 * 2**20  # CPU: as fast as larger blocks (those leave the caches), an eighth the memory
GPU_MIN_BUDGET_BYTES = 256 * 2**20
MIN_BUDGET_BYTES = 2**20
MIN_ROWS = 64  # below this many rows per chunk, split the style positions instead
# exp(x) of a shifted logit x below this is a subnormal float32 (< 1.2e-38, nothing next to the row's
# largest weight, 1): such logits are sent to -inf, so their weight is an exact 0. Subnormal weights
# make the CPU's exp and matrix products 10-50x slower (the worker threads do not flush them to zero).
SUBNORMAL_LOGIT = math.log(torch.finfo(torch.float32).tiny)


@dataclass(frozen=True)
class AttentionSpec:
    """An attention variant; ``temperature`` divides the logits of the softmax kinds.

    ``global_share`` in [0, 1] moves each position's attended mean and std that share of
    the way to the whole style's mean and std (uniform attention, which is AdaIN): 0 is
    AdaAttN as published; the training-free family uses it because its AdaIN decoder was
    trained on globally normalised features.
    """

    kind: str = "softmax"
    temperature: float = 1.0
    global_share: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {self.kind!r}; expected one of {', '.join(ATTENTION_KINDS)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"attention temperature must be a positive number, got {self.temperature}")
        if not 0.0 <= self.global_share <= 1.0:
            raise ValueError(f"global_share must be in [0, 1], got {self.global_share}")

    @property
    def normalized(self) -> bool:
        """Whether queries and keys are L2-normalised per position (cosine kinds)."""
        return self.kind != "softmax"


# Each kind's own temperature when one is chosen without a temperature (cosine has none: 1 is unused).
KIND_TEMPERATURE = {"softmax": 1.0, "cosine": 1.0, "cosine_softmax": 0.03}


def resolve_attention(
    default: AttentionSpec,
    kind: str | None = None,
    temperature: float | None = None,
    global_share: float | None = None,
) -> AttentionSpec:
    """The one rule for the attention a run uses, given a family's ``default`` variant.

    Nothing chosen (``kind`` None or "auto"): the family's default, temperature included. A
    chosen ``kind`` other than the family's gets that kind's own temperature
    (:data:`KIND_TEMPERATURE`), never the family's. An explicit ``temperature`` (not None,
    not 0) always wins. ``global_share`` None keeps the family's, whatever the kind (it is
    about the family's decoder, not the attention kind).
    """
    kind = default.kind if kind in (None, "auto") else kind
    share = default.global_share if global_share is None else float(global_share)
    if temperature:
        return AttentionSpec(kind, float(temperature), share)
    if kind == default.kind:
        return replace(default, global_share=share)
    if kind not in KIND_TEMPERATURE:
        raise ValueError(f"unknown attention {kind!r}; expected one of {', '.join(ATTENTION_KINDS)}")
    return AttentionSpec(kind, KIND_TEMPERATURE[kind], share)


@dataclass(frozen=True)
class StyleBank:
    """One style source, flattened for the kernel (float32).

    ``keys`` [n_s, d] (already normalised for cosine kinds), ``values`` [n_s, 2C] holding
    [v, v**2], ``column_weight`` [n_s] in [0, 1] (a style mask) or None.
    """

    keys: Tensor
    values: Tensor
    column_weight: Tensor | None = None


def normalize_positions(x: Tensor) -> Tensor:
    """``x / (||x|| + 1e-5)`` over the last dim (the reference cosine's normalisation)."""
    return x / (x.norm(dim=-1, keepdim=True) + NORM_EPS)


def make_bank(keys: Tensor, values: Tensor, spec: AttentionSpec, column_weight: Tensor | None = None) -> StyleBank:
    """Build a :class:`StyleBank` from keys [n_s, d] and values [n_s, C]."""
    keys = keys.float()
    values = values.float()
    if spec.normalized:
        keys = normalize_positions(keys)
    return StyleBank(keys.contiguous(), torch.cat([values, values * values], dim=1), column_weight)


def prepare_query(query: Tensor, spec: AttentionSpec) -> Tensor:
    """Queries [n_c, d] as the kernel wants them (float32, normalised for cosine kinds)."""
    query = query.float()
    return normalize_positions(query) if spec.normalized else query


def budget_for(device: torch.device, free_bytes: int | None = None) -> int:
    """A workspace size for ``device``: on a GPU a quarter of its free memory, between
    256 MiB and 4 GiB (bigger blocks keep it busy); elsewhere 32 MiB (on the CPU blocks of
    64-256 MiB were no faster at 512x512, within 6% on 65536 style positions, 1024x1024 exact,
    and took up to 220 MiB more)."""
    if device.type != "cuda":
        return DEFAULT_BUDGET_BYTES
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return int(min(4 * 2**30, max(GPU_MIN_BUDGET_BYTES, free_bytes // 4)))


def chunk_shape(rows: int, cols: int, budget_bytes: int) -> tuple[int, int]:
    """Rows and columns of one logits block that fits ``budget_bytes`` of float32."""
    elems = max(budget_bytes // 4, 1)
    if cols * min(rows, MIN_ROWS) <= elems:
        return max(1, min(rows, elems // cols)), cols
    r = min(rows, MIN_ROWS)
    return r, max(1, elems // r)


def block_shape(
    rows: int, cols: int, budget_bytes: int, logit_work: int, listening: bool, device_type: str
) -> tuple[int, int]:
    """Rows and style columns of one block of the chunked kernel: what fits ``budget_bytes``, and with a
    listener on a CPU no more rows than :func:`~adaattn_model.progress.step_work` allows for logits costing
    ``logit_work`` multiply-adds each."""
    block_rows, block_cols = chunk_shape(rows, cols, max(int(budget_bytes), MIN_BUDGET_BYTES))
    limit = step_work(device_type) if listening else None
    if limit is not None:  # fewer rows per block for a listener (rows only: the same sums, bitwise)
        block_rows = min(block_rows, max(MIN_ROWS, limit // (min(block_cols, cols) * logit_work)))
    return block_rows, block_cols


def planned_blocks(rows: int, bank_cols: Sequence[int], budget_bytes: int, logit_work: int, device_type: str) -> int:
    """Progress steps of :func:`attended_moments` (with a listener, no out-of-memory retry) for ``rows``
    query rows against banks of ``bank_cols`` style positions."""
    block_rows, block_cols = block_shape(rows, max(bank_cols), budget_bytes, logit_work, True, device_type)
    return block_count(rows, block_rows, bank_cols, block_cols)


def block_count(rows: int, block_rows: int, bank_cols: Sequence[int], block_cols: int) -> int:
    """Blocks of ``block_rows`` x ``block_cols`` logits over ``rows`` query rows and banks of ``bank_cols``."""
    return -(-rows // block_rows) * sum(-(-cols // block_cols) for cols in bank_cols)


def is_out_of_memory(error: BaseException) -> bool:
    """True for an allocator failure on any device (CUDA OOM or a CPU allocation error)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and (
        "out of memory" in str(error) or "can't allocate memory" in str(error)
    )


def attended_moments(
    query: Tensor,
    banks: Sequence[StyleBank],
    spec: AttentionSpec,
    *,
    row_weights: Sequence[Tensor | None] | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    backend: str = "auto",
    progress: Progress | None = None,
) -> Tensor:
    """``[mean, second moment]`` [n_c, 2C] of the values under the attention of ``query``.

    Several banks form one distribution over the union of their positions (the ``match``
    blend); ``row_weights[k]`` [n_c] multiplies bank k's attention weights per content
    position before normalisation (a log-bias for the softmax kinds). Rows whose weights
    are all zero get zero moments. On an out-of-memory error the budget is halved and
    the chunk retried, down to 1 MiB.

    ``backend``: ``kernel`` (the chunked kernel here), ``sdpa`` (fused SDPA where it can
    express the attention, see :mod:`fused_attention`), or ``auto``: SDPA on CUDA, the
    kernel elsewhere (on the CPU SDPA is no faster).
    ``progress`` steps once per block of the logits (rows x style columns of one bank);
    with a listener, a block on a CPU has only as many rows as
    :func:`~adaattn_model.progress.step_work` allows (rows are independent, so the result
    is the same).
    """
    if not banks:
        raise ValueError("attention needs at least one style source")
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; expected one of {', '.join(ATTENTION_BACKENDS)}")
    if backend == "sdpa" or (backend == "auto" and query.device.type == "cuda"):
        from .fused_attention import can_fuse, fused_moments

        if can_fuse(banks, spec, row_weights):
            try:
                budget = max(int(budget_bytes), MIN_BUDGET_BYTES)
                return fused_moments(query, banks, spec, budget_bytes=budget, progress=progress)
            except RuntimeError as error:  # out of memory: the chunked kernel below adapts its blocks
                if not is_out_of_memory(error):
                    raise
    row_weights = list(row_weights) if row_weights is not None else [None] * len(banks)
    n_rows = query.shape[0]
    max_cols = max(bank.keys.shape[0] for bank in banks)
    out = torch.empty(n_rows, banks[0].values.shape[1], device=query.device, dtype=torch.float32)
    budget = max(int(budget_bytes), MIN_BUDGET_BYTES)
    work = query.shape[1] + banks[0].values.shape[1]  # multiply-adds per logit: q.k, weights x [v, v**2]
    start, workspace, planned = 0, None, 0
    while start < n_rows:
        rows, cols = block_shape(n_rows - start, max_cols, budget, work, progress is not None, query.device.type)
        stop = start + rows
        if progress is not None:  # announce the blocks still to come at this block size (more after an OOM)
            blocks = block_count(n_rows - start, rows, [bank.keys.shape[0] for bank in banks], cols)
            if blocks > planned:
                progress.expect(blocks - planned)
                planned = blocks
            before = progress.done
        try:
            if workspace is None or workspace.numel() < rows * cols:
                workspace = None
                workspace = torch.empty(rows * cols, device=query.device, dtype=torch.float32)
            _moments_block(
                query[start:stop],
                banks,
                [w[start:stop] if w is not None else None for w in row_weights],
                spec,
                cols,
                workspace,
                out[start:stop],
                progress,
            )
        except RuntimeError as error:  # torch.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(error) or budget <= MIN_BUDGET_BYTES:
                raise
            workspace = None
            if query.device.type == "cuda":
                torch.cuda.empty_cache()
            budget //= 2
            if progress is not None:
                planned -= progress.done - before
            continue
        if progress is not None:
            planned -= progress.done - before
        start = stop
    return out


def _moments_block(
    q: Tensor,
    banks: Sequence[StyleBank],
    row_weights: Sequence[Tensor | None],
    spec: AttentionSpec,
    cols: int,
    workspace: Tensor,
    acc: Tensor,
    progress: Progress | None = None,
) -> None:
    """Moments for one chunk of rows, written into ``acc``; style positions in chunks of ``cols``
    (one progress step each)."""
    rows = q.shape[0]
    acc.zero_()
    total = torch.zeros(rows, device=q.device, dtype=torch.float32)
    linear = spec.kind == "cosine"
    run_max = None if linear else torch.full((rows,), -math.inf, device=q.device)
    inv_temperature = 1.0 / spec.temperature
    for bank, row_weight in zip(banks, row_weights):
        row_bias = None
        if row_weight is not None and not linear:
            row_bias = row_weight.float().log()  # log 0 = -inf removes the bank for that row
        col_bias = None
        if bank.column_weight is not None and not linear:
            col_bias = bank.column_weight.float().log()
        for c0 in range(0, bank.keys.shape[0], cols):
            k = bank.keys[c0 : c0 + cols]
            v = bank.values[c0 : c0 + cols]
            logits = workspace[: rows * k.shape[0]].view(rows, k.shape[0])
            torch.mm(q, k.t(), out=logits)
            if linear:
                weights = logits.add_(1.0).relu_()
                if bank.column_weight is not None:
                    weights.mul_(bank.column_weight[c0 : c0 + cols])
                if row_weight is not None:
                    weights.mul_(row_weight[:, None])
                total.add_(weights.sum(dim=1))
                acc.addmm_(weights, v)
                step(progress)
                continue
            if inv_temperature != 1.0:
                logits.mul_(inv_temperature)
            if col_bias is not None:
                logits.add_(col_bias[c0 : c0 + cols])
            if row_bias is not None:
                logits.add_(row_bias[:, None])
            new_max = torch.maximum(run_max, logits.amax(dim=1))
            # Rows with every logit -inf so far (fully masked) shift by 0: exp gives 0, not NaN.
            shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            rescale = torch.exp(run_max - shift)
            logits.sub_(shift[:, None])
            weights = torch.nn.functional.threshold_(logits, SUBNORMAL_LOGIT, -math.inf).exp_()
            total.mul_(rescale).add_(weights.sum(dim=1))
            acc.mul_(rescale[:, None]).addmm_(weights, v)
            run_max = new_max
            step(progress)
    if linear:
        acc.div_((total + NORM_EPS)[:, None])
    else:
        acc.div_(total.clamp_min(torch.finfo(torch.float32).tiny)[:, None])


def moments_to_mean_std(moments: Tensor) -> tuple[Tensor, Tensor]:
    """Split [mean, second] [..., 2C] into mean and ``sqrt(relu(second - mean**2))`` (no eps).

    Outside autograd the std is computed in the second moment's place (``moments`` is consumed).
    """
    mean, second = moments.chunk(2, dim=-1)
    if moments.requires_grad:  # out of place: sqrt's backward needs its own output
        return mean, (second - mean * mean).relu().sqrt()
    # mean**2 about 1M values at a time (slices along the first dim), not a whole map
    step = max(1, 2**20 * mean.shape[0] // max(1, mean.numel()))
    for r in range(0, mean.shape[0], step):
        second[r : r + step].sub_(mean[r : r + step] * mean[r : r + step])
    return mean, second.relu_().sqrt_()
