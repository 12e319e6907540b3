"""Convolutional layers run in bands of rows, so a large image reports progress and can be
cancelled between bands instead of after a whole layer.

On a CPU a single 3x3 conv of a 2048^2 image takes many seconds; when someone listens
(``progress`` given) each band holds at most :func:`~adaattn_model.progress.step_work`
multiply-adds. Every band computes exactly what the whole layer computes for its rows (the
map is reflection-padded once, as the conv pads it; pooling bands have an even height;
nearest upsampling goes row by row), so the output equals the unsplit layer's (bitwise on
the CPUs tested: tests/test_progress.py). Splitting costs some speed (benchmarks/
bench_progress.py), so without a listener, and on a GPU, each layer runs whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .progress import ELEMENT_WORK, Progress, step, step_work

MIN_BAND_ROWS = 16  # even (pooling); thinner bands would make the convolutions pick other kernels
# A conv band reads at most this much (when bands are used at all): on the CPU bands of 8 MiB ran as fast
# as whole 512x512 layers or faster (they stay in cache), and a band's input, padded copy and output
# are the memory a layer needs beyond its input and output maps.
BAND_BYTES = 8 * 2**20


def rows_per_band(rows: int, row_work: int, device: torch.device, multiple: int = 1, row_bytes: int = 0) -> int:
    """Rows of one band when a row costs ``row_work`` (and reads ``row_bytes``): all ``rows`` unless the
    device limits a step (a CPU); then no more than a step's work, nor :data:`BAND_BYTES` of input."""
    limit = step_work(device.type)
    if limit is None:
        return rows
    per = limit // max(1, row_work)
    if row_bytes:
        per = min(per, BAND_BYTES // row_bytes)
    if per >= rows:
        return rows
    return max(MIN_BAND_ROWS, per // multiple * multiple)


def band_count(rows: int, row_work: int, device: torch.device, multiple: int = 1, row_bytes: int = 0) -> int:
    return math.ceil(rows / rows_per_band(rows, row_work, device, multiple, row_bytes))


def conv_row_work(x_shape: tuple[int, ...], out_channels: int, kernel: int = 3) -> int:
    """Multiply-adds of one output row, plus its memory traffic (the input row read, the output row
    written): a conv with few channels (conv1_1 both ways) is bound by memory, not by arithmetic."""
    n, c, _, w = x_shape
    return n * w * (c * out_channels * kernel * kernel + (c + out_channels) * ELEMENT_WORK)


def map_row_work(x_shape: tuple[int, ...], written_per_read: float = 1.0) -> int:
    """Memory traffic of one input row of a map-like layer that writes ``written_per_read`` elements
    per element it reads (a 2x2 pool: 1/4, a 2x upsampling: 4)."""
    n, c, _, w = x_shape
    return int(n * c * w * (1 + written_per_read) * ELEMENT_WORK)


POOL_WRITES, UPSAMPLE_WRITES = 0.25, 4.0


def _empty_rows(like: Tensor, rows: int) -> Tensor:
    """An uninitialised map like ``like`` with ``rows`` rows, in its memory format (channels_last stays so)."""
    channels_last = like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((*like.shape[:2], rows, like.shape[3]), dtype=like.dtype, device=like.device, memory_format=fmt)


def conv3x3(
    conv: nn.Conv2d,
    x: Tensor,
    *,
    relu: bool = True,
    upsample: bool = False,
    pool: bool = False,
    progress: Progress | None = None,
) -> Tensor:
    """``relu(conv(x))`` (or ``conv(x)``) for a 3x3 conv with 1-pixel reflection padding, in bands.

    ``upsample``: the conv of ``x`` upsampled x2 (nearest); ``pool``: followed by VGG's 2x2 max
    pooling. In bands, each band upsamples only the rows it reads and pools the rows it wrote, so
    neither the upsampled map nor the unpooled one (the largest maps of a run) is ever whole.
    """
    h, per = _conv_bands(tuple(x.shape), conv.out_channels, x.device, upsample, pool, x.element_size())
    if progress is None or per >= h:
        y = conv(_upsample(x) if upsample else x)
        y = y.relu_() if relu else y  # in place: a second full-size map otherwise (autograd allows it)
        step(progress)
        return _pool(y) if pool else y
    out = None
    for start in range(0, h, per):
        stop = min(h, start + per)
        # Each band takes its rows with one neighbour row each side (reflected at the image's top and bottom
        # edges, as the conv pads): the same input the whole layer's padded map gives those rows, without
        # copying the whole map at once (a 2K map is a GiB). Pads keep the map's memory layout.
        lo, hi = max(0, start - 1), min(h, stop + 1)
        if upsample:  # upsampled row r is row r // 2 of x
            rows = _upsample(x[:, :, lo // 2 : (hi + 1) // 2])[:, :, lo % 2 : lo % 2 + hi - lo]
        else:
            rows = x[:, :, lo:hi]
        y = F.conv2d(F.pad(rows, (1, 1, int(start == 0), int(stop == h)), mode="reflect"), conv.weight, conv.bias)
        y = y.relu_() if relu else y
        if pool:  # bands start on even rows, so pooling a band pools the same windows as the whole map
            y, start = _pool(y), start // 2
        if out is None:
            out = _empty_rows(y, (h + 1) // 2 if pool else h)
        out[:, :, start : start + y.shape[2]] = y
        step(progress)
    return out


def _conv_bands(x_shape: tuple[int, ...], out_channels: int, device: torch.device, upsample: bool, pool: bool,
                element_size: int) -> tuple[int, int]:  # fmt: skip
    """(rows of the conv's output before pooling, rows per band) of :func:`conv3x3` with a listener."""
    n, c, h, w = x_shape
    if upsample:
        h, w = 2 * h, 2 * w
    work, row_bytes = conv_row_work((n, c, h, w), out_channels), n * c * w * element_size
    return h, rows_per_band(h, work, device, 2 if pool else 1, row_bytes)


def conv_units(x_shape: tuple[int, ...], out_channels: int, device: torch.device, *, upsample: bool = False,
               pool: bool = False, element_size: int = 4) -> int:  # fmt: skip
    """Progress steps of :func:`conv3x3` for an input of ``x_shape`` (``element_size`` bytes each)."""
    h, per = _conv_bands(x_shape, out_channels, device, upsample, pool, element_size)
    return math.ceil(h / per)


def _row_map(x: Tensor, fn: Callable[[Tensor], Tensor], out_rows: Callable[[int], int], multiple: int,
             writes: float, progress: Progress | None) -> Tensor:  # fmt: skip
    """``fn`` over bands of rows, for maps where output row r depends on input rows of its band only."""
    h = x.shape[2]
    per = h if progress is None else rows_per_band(h, map_row_work(x.shape, writes), x.device, multiple)
    if per >= h:
        y = fn(x)
        step(progress)
        return y
    out = None
    for start in range(0, h, per):
        y = fn(x[:, :, start : start + per])
        if out is None:
            out = _empty_rows(y, out_rows(h))
        at = out_rows(start)
        out[:, :, at : at + y.shape[2]] = y
        step(progress)
    return out


def max_pool2(x: Tensor, progress: Progress | None = None) -> Tensor:
    """2x2 max pooling, stride 2, ceil mode (VGG's), in bands of an even number of rows."""
    return _row_map(x, _pool, lambda r: (r + 1) // 2, 2, POOL_WRITES, progress)


def upsample2(x: Tensor, progress: Progress | None = None) -> Tensor:
    """Nearest x2 upsampling, in bands."""
    return _row_map(x, _upsample, lambda r: 2 * r, 1, UPSAMPLE_WRITES, progress)


def _pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def pointwise(fn: Callable[[Tensor], Tensor], x: Tensor, progress: Progress | None = None) -> Tensor:
    """A per-pixel layer (a 1x1 conv), in bands."""
    return _row_map(x, fn, lambda r: r, 1, 1.0, progress)
