"""Progress and cancel through the engine: where steps happen, how soon a cancel stops the work,
that a cancel leaves nothing changed, and that a listener never changes a result."""

from __future__ import annotations

import logging
from dataclasses import replace

import comfy_stubs
import pytest
import torch
from conftest import rand_images
from test_nodes import as_image, comfy, load, run  # noqa: F401  (comfy is a fixture)

from adaattn_model import attention, banded
from adaattn_model import progress as progress_module
from adaattn_model.adaattn import StyleSource
from adaattn_model.attention import AttentionSpec, attended_moments, make_bank, prepare_query
from adaattn_model.features import encode
from adaattn_model.frames import FrameState, Stabilizer, stylize_frames
from adaattn_model.pipeline import Style, StylizeOptions, Stylizer, encode_style
from adaattn_model.progress import Progress
from adaattn_model.sampling import Sampling

OPTIONS = StylizeOptions(attention=AttentionSpec("cosine_softmax", 0.05))
STAB = Stabilizer(temporal_smoothing=0.8, shared_normalization=0.5)


class Cancelled(Exception):
    pass


class Listener:
    """Records every report; cancels (raises from check) once ``cancel_at`` steps are done."""

    def __init__(self, cancel_at: int | None = None) -> None:
        self.reports: list[tuple[int, int]] = []
        self.cancel_at = cancel_at
        self.requested = False

    def report(self, done: int, total: int) -> None:
        self.reports.append((done, total))
        if self.cancel_at is not None and done >= self.cancel_at:
            self.requested = True

    def check(self) -> None:
        if self.requested:
            raise Cancelled

    def progress(self) -> Progress:
        return Progress(self.report, self.check)


def assert_bar_sane(reports):
    """done strictly rises, total never falls, done <= total, and the bar ends full."""
    assert reports
    dones, totals = [d for d, _ in reports], [t for _, t in reports]
    assert all(b > a for a, b in zip(dones, dones[1:]))
    assert all(b >= a for a, b in zip(totals, totals[1:]))
    assert all(d <= t for d, t in reports)
    assert dones[-1] == totals[-1]


@pytest.fixture
def small_steps(monkeypatch):
    """Make tiny inputs split like large ones: a step holds at most 2**23 multiply-adds."""
    monkeypatch.setattr(progress_module, "CPU_STEP_WORK", 2**23)


def count_calls(monkeypatch, module, name, listener):
    """Wrap ``module.name`` to count its calls made after the listener asked for a cancel."""
    real, after = getattr(module, name), []

    def counted(*args, **kwargs):
        if listener.requested:
            after.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return after


# --- the attention kernel ------------------------------------------------------------------------


def kernel_inputs(spec):
    g = torch.Generator().manual_seed(0)
    q = prepare_query(torch.randn(300, 8, generator=g), spec)
    banks = [make_bank(torch.randn(50, 8, generator=g), torch.randn(50, 4, generator=g), spec) for _ in range(2)]
    return q, banks


@pytest.mark.parametrize("kind", ["softmax", "cosine"])
def test_attention_steps_per_block_and_listening_changes_nothing(monkeypatch, kind):
    monkeypatch.setattr(attention, "MIN_BUDGET_BYTES", 64)
    spec = AttentionSpec(kind)
    q, banks = kernel_inputs(spec)
    budget = 4 * 50 * 64  # 64 rows x 50 columns per block: 5 row blocks x 2 banks
    plain = attended_moments(q, banks, spec, budget_bytes=budget)
    listener = Listener()
    heard = attended_moments(q, banks, spec, budget_bytes=budget, progress=listener.progress())
    assert torch.equal(plain, heard)
    assert [d for d, _ in listener.reports] == list(range(1, 11)) and listener.reports[0][1] == 10
    assert_bar_sane(listener.reports)


def test_attention_announces_more_blocks_after_an_out_of_memory_retry(monkeypatch):
    monkeypatch.setattr(attention, "MIN_BUDGET_BYTES", 64)
    spec = AttentionSpec("softmax")
    q, banks = kernel_inputs(spec)
    real, calls = attention._moments_block, []

    def flaky(q_block, *args):
        calls.append(q_block.shape[0])
        if len(calls) == 2:
            raise torch.OutOfMemoryError("simulated")
        return real(q_block, *args)

    monkeypatch.setattr(attention, "_moments_block", flaky)
    listener = Listener()
    out = attended_moments(q, banks, spec, budget_bytes=4 * 50 * 64, progress=listener.progress())
    monkeypatch.setattr(attention, "_moments_block", real)
    torch.testing.assert_close(out, attended_moments(q, banks, spec, budget_bytes=4 * 50 * 64))
    # the second block failed; at half the budget blocks have half the columns, so more steps remain
    assert len(calls) == 1 + 1 + 4 and listener.reports[-1][1] == 2 + 4 * 2 * 2
    assert_bar_sane(listener.reports)


def test_a_cancel_stops_the_attention_kernel_within_one_block(monkeypatch):
    monkeypatch.setattr(attention, "MIN_BUDGET_BYTES", 64)
    spec = AttentionSpec("cosine_softmax", 0.1)
    q, banks = kernel_inputs(spec)
    listener = Listener(cancel_at=3)
    after = count_calls(monkeypatch, attention, "_moments_block", listener)
    # one column block per row block here, so a row block is one step
    with pytest.raises(Cancelled):
        attended_moments(q, banks[:1], spec, budget_bytes=4 * 50 * 64, progress=listener.progress())
    assert listener.requested and len(after) <= 1
    assert listener.reports[-1][0] == 3


def test_cpu_blocks_hold_a_bounded_amount_of_work(monkeypatch):
    """For a listener on a CPU the kernel's blocks have fewer rows, capped by work; the result is the same."""
    spec = AttentionSpec("softmax")
    q, banks = kernel_inputs(spec)
    whole = attended_moments(q, banks, spec)
    limit = 100 * 50 * 16  # multiply-adds: 100 rows of 50 columns x (8 key + 8 value channels)
    monkeypatch.setattr(progress_module, "CPU_STEP_WORK", limit)
    real, blocks = attention._moments_block, []

    def record(q_block, banks, row_weights, spec, cols, *args):
        blocks.append((q_block.shape[0], cols))
        return real(q_block, banks, row_weights, spec, cols, *args)

    monkeypatch.setattr(attention, "_moments_block", record)
    listener = Listener()
    capped = attended_moments(q, banks, spec, progress=listener.progress())
    assert torch.equal(capped, whole)
    assert len(blocks) == 3 and all(rows * min(cols, 50) * 16 <= limit for rows, cols in blocks)
    assert listener.reports[-1][0] == sum(2 * -(-50 // cols) for _, cols in blocks)  # a step per column block


# --- the convolutional stages ---------------------------------------------------------------------


def test_banded_layers_equal_whole_layers(models, small_steps, monkeypatch):
    """Bands of rows compute what the whole layer computes (conv with reflection, pool, upsample)."""
    encoder, model = models["encoder"], models["official-image"]
    image = rand_images(2, 3, 50, 38)  # odd sizes further down: ceil-mode pooling of an odd band
    with torch.inference_mode():
        feats = {k: v for k, v in encoder.taps(rand_images(2, 3, 48, 32, seed=1)).items() if k != "relu1_1"}
        taps = encoder.taps(image, progress=Listener().progress())
        out = model.decode(feats, progress=Listener().progress())
        whole_taps = encoder.taps(image)  # without a listener every layer runs whole
        whole_out = model.decode(feats)
    for name in taps:
        torch.testing.assert_close(taps[name], whole_taps[name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, whole_out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("upsample, pool", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("size", [(37, 23), (40, 17), (33, 34)])
def test_a_conv_band_upsamples_and_pools_only_its_rows(monkeypatch, upsample, pool, size):
    """The fused bands (upsample before, pool after) equal upsampling, convolving and pooling whole maps,
    for odd and even sizes and bands of 6 rows (the last one shorter)."""
    conv = torch.nn.Conv2d(8, 6, 3, padding=1, padding_mode="reflect").requires_grad_(False)
    x = rand_images(2, 8, *size, seed=7)
    monkeypatch.setattr(banded, "rows_per_band", lambda rows, *args, **kwargs: min(rows, 6))
    listener = Listener()
    got = banded.conv3x3(conv, x, upsample=upsample, pool=pool, progress=listener.progress())
    want = torch.nn.functional.relu(conv(torch.nn.functional.interpolate(x, scale_factor=2) if upsample else x))
    if pool:
        want = torch.nn.functional.max_pool2d(want, 2, 2, ceil_mode=True)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    rows = size[0] * (2 if upsample else 1)
    assert listener.reports[-1][0] == -(-rows // 6)  # a step per band


def test_a_band_reads_at_most_band_bytes(monkeypatch):
    """On a CPU with a listener a conv band reads at most BAND_BYTES (and a step's work), at least 16 rows;
    on a GPU, or when nobody listens, the layer runs whole."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    row_bytes = 64 * 512 * 4  # a 64-channel float32 row of a 512-wide map
    assert banded.rows_per_band(512, 1, cpu, 1, row_bytes) == banded.BAND_BYTES // row_bytes == 64
    assert banded.rows_per_band(512, 1, cpu, 2, 3 * row_bytes) == 20  # 21 rows fit; even for pooling
    assert banded.rows_per_band(512, 1, cpu, 1, 64 * row_bytes) == banded.MIN_BAND_ROWS
    assert banded.rows_per_band(32, 1, cpu, 1, row_bytes) == 32
    assert banded.rows_per_band(512, 1, gpu, 1, row_bytes) == 512
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, padding_mode="reflect").requires_grad_(False)
    x = torch.rand(1, 64, 96, 64)  # 1.5 MiB: bands of 16 rows once BAND_BYTES is 256 KiB
    monkeypatch.setattr(banded, "BAND_BYTES", 2**18)
    listener = Listener()
    with torch.inference_mode():
        banded.conv3x3(conv, x, progress=listener.progress())
    assert listener.reports[-1][0] == 6 == banded.conv_units(tuple(x.shape), 64, cpu)


def test_vgg_and_decoder_announce_their_steps_and_split_large_layers(models, small_steps):
    encoder, model = models["encoder"], models["lite"]
    image = rand_images(1, 3, 64, 64)
    with torch.inference_mode():
        listener = Listener()
        p = listener.progress()
        feats = encoder.taps(image, "relu4_1", progress=p)
        announced = p.total
        assert p.done == announced == encoder.units(tuple(image.shape), "relu4_1", image.device)
        assert announced > 13  # more steps than layers: the large early layers ran in bands
        model.decode({"relu4_1": feats["relu4_1"]}, progress=p)
    assert p.done == p.total > announced
    assert_bar_sane(listener.reports)


@pytest.mark.parametrize("stage", ["encoder", "decoder"])
def test_a_cancel_stops_the_vgg_and_decoder_between_layers(models, small_steps, monkeypatch, stage):
    encoder, model = models["encoder"], models["official-image"]
    image = rand_images(1, 3, 64, 64)
    with torch.inference_mode():
        feats = encoder.taps(image)
        listener = Listener(cancel_at=4)
        after = count_calls(monkeypatch, banded, "conv3x3", listener)
        after += count_calls(monkeypatch, banded, "max_pool2", listener)
        after += count_calls(monkeypatch, banded, "upsample2", listener)
        with pytest.raises(Cancelled):
            if stage == "encoder":
                encoder.taps(image, progress=listener.progress())
            else:
                model.decode({k: feats[k] for k in model.family.layers}, progress=listener.progress())
    assert listener.requested and len(after) <= 1


# --- frames -----------------------------------------------------------------------------------------


def run_frames(models, frames, style, *, chunk=2, state=None, progress=None, callback=None, family="lite"):
    model, encoder = models[family], models["encoder"]
    with torch.inference_mode():
        source = StyleSource(encode_style(encoder, style, model.family.layers))
        return torch.cat(list(stylize_frames(model, encoder, frames, [source], OPTIONS, STAB, chunk=chunk,
                                             state=state, callback=callback, progress=progress)))  # fmt: skip


def test_frames_with_a_listener_equal_frames_without(models, small_steps):
    frames, style = rand_images(5, 3, 32, 40, seed=1), rand_images(1, 3, 36, 36, seed=2)
    plain = run_frames(models, frames, style, family="official-image")
    listener, seen = Listener(), []
    p = listener.progress()
    heard = run_frames(models, frames, style, progress=p, family="official-image",
                       callback=lambda done, total: seen.append((p.done, p.total)))  # fmt: skip
    torch.testing.assert_close(plain, heard, rtol=1e-4, atol=1e-4)  # split layers: equal to rounding
    assert_bar_sane(listener.reports)
    # every chunk's steps (a chunk of 2 frames, then 2, then 1) announced before the first, and exactly
    assert {total for _, total in listener.reports} == {listener.reports[-1][0]}
    assert seen[-1] == listener.reports[-1]


def test_a_cancel_stops_frames_between_frames(models):
    frames, style = rand_images(4, 3, 32, 32, seed=3), rand_images(1, 3, 32, 32, seed=4)
    listener, yielded = Listener(), []

    def callback(done, total):
        yielded.append(done)
        if done == 2:
            listener.requested = True
            listener.steps_at_cancel = len(listener.reports)

    with pytest.raises(Cancelled):
        run_frames(models, frames, style, chunk=1, progress=listener.progress(), callback=callback)
    assert yielded == [1, 2] and len(listener.reports) == listener.steps_at_cancel  # no work after the cancel


@pytest.mark.parametrize("where", [0.05, 0.5, 0.95])  # in the encoder, the attention, the decoder of chunk 2
def test_a_cancel_leaves_the_model_and_the_stabiliser_state_intact(models, small_steps, where):
    frames, style = rand_images(4, 3, 32, 32, seed=5), rand_images(1, 3, 32, 32, seed=6)
    p, chunk_ends = Listener().progress(), []
    fresh = run_frames(models, frames, style, progress=p, callback=lambda done, total: chunk_ends.append(p.done))
    steps_per_chunk = chunk_ends[0]
    assert steps_per_chunk > 20

    state, outputs = FrameState(), []
    listener = Listener(cancel_at=steps_per_chunk + int(where * steps_per_chunk))
    model, encoder = models["lite"], models["encoder"]
    with torch.inference_mode(), pytest.raises(Cancelled):
        source = StyleSource(encode_style(encoder, style, model.family.layers))
        for out in stylize_frames(model, encoder, frames, [source], OPTIONS, STAB, chunk=2, state=state,
                                  progress=listener.progress()):  # fmt: skip
            outputs.append(out)
    assert len(outputs) == 1
    resumed = run_frames(models, frames[2:], style, state=state, progress=Listener().progress())  # as after chunk 1
    assert torch.equal(torch.cat([outputs[0], resumed]), fresh)
    assert torch.equal(run_frames(models, frames, style, progress=Listener().progress()), fresh)  # nothing else changed


def test_encode_with_progress_equals_encode_without(models, small_steps, monkeypatch):
    encoder = models["encoder"]
    image = rand_images(1, 3, 48, 48, seed=8)
    with torch.inference_mode():
        plain = encode(encoder, image)
        heard = encode(encoder, image, progress=Listener().progress())
    for layer in plain.features:  # split layers compute the same sums; kernels may round differently
        torch.testing.assert_close(plain.features[layer], heard.features[layer], rtol=1e-4, atol=1e-4)
        # keys are normalised per channel: a near-constant channel of these random weights magnifies rounding
        torch.testing.assert_close(plain.keys[layer], heard.keys[layer], rtol=1e-3, atol=1e-3)
    # with steps as large as the real ones, nothing at this size is split: bitwise
    monkeypatch.setattr(progress_module, "CPU_STEP_WORK", 2**33)
    with torch.inference_mode():
        heard = encode(encoder, image, progress=Listener().progress())
    assert all(torch.equal(plain.features[k], heard.features[k]) for k in plain.features)


# --- the Progress object itself ----------------------------------------------------------------------


def test_reserve_and_release_keep_the_bar_monotonic():
    listener = Listener()
    p = listener.progress()
    p.expect(3)
    p.step(3)
    p.reserve(9)  # a forecast of three more rounds
    for _ in range(2):  # only two come; each announces its 3 again
        p.expect(3)
        p.step(3)
    assert (p.done, p.total) == (9, 12)
    p.release()
    assert (p.done, p.total) == (12, 12)
    assert_bar_sane(listener.reports)
    p.expect(2)  # more than reserved grows the total
    assert p.total == 14


# --- the frame node -----------------------------------------------------------------------------------


FRAME_INPUTS = {"style_max_side": 0, "temporal_smoothing": 0.8, "change_threshold": 0.5, "shared_normalization": 0.5,
                "frames_per_chunk": 2}  # fmt: skip


def test_an_interrupt_inside_a_chunk_stops_the_frame_node_and_changes_nothing(comfy, small_steps, caplog):
    pack, host = comfy
    model = load(pack)
    frames, style = as_image(rand_images(6, 3, 32, 32, seed=9)), as_image(rand_images(1, 3, 32, 32, seed=10))
    def stylize():
        return run(pack, "AdaAttNStylizeFrames", model=model, frames=frames, style=style, **FRAME_INPUTS)

    fresh = stylize()
    reports = list(host.progress)
    assert_bar_sane(reports)
    assert len(reports) > 3 * 13  # the bar moves within chunks, not once per chunk
    checks_per_run = host.checks

    host.progress.clear()
    host.interrupt_after = host.checks + checks_per_run // 2  # in the middle of the second of three chunks
    with caplog.at_level(logging.WARNING), pytest.raises(comfy_stubs.InterruptProcessingException):
        stylize()
    assert "out of memory" not in caplog.text  # an interrupt is never taken for an OOM and retried
    stopped_at = host.checks
    assert len(host.progress) < len(reports) * 3 // 4

    host.interrupt_after = None
    again = stylize()
    assert host.checks > stopped_at
    assert torch.equal(again, fresh)


# --- the bar's total is known before the work starts ----------------------------------------------


@pytest.mark.parametrize(
    "family, options, tile",
    [
        ("lite", OPTIONS, 0),
        ("lite", StylizeOptions(blend="mix"), 48),
        ("official-image", StylizeOptions(blend="match"), 0),
        ("official-image", StylizeOptions(sampling=Sampling("official", 1)), 80),
        ("official-video", StylizeOptions(), 48),
    ],
)
def test_the_core_announces_its_whole_total_before_the_first_step(models, small_steps, monkeypatch, family, options,
                                                                   tile):
    """From the first report on the total does not change, for bands, tiles, blends and sampling, also
    when a re-run finds the encodings in the cache; the bar ends full. (Tiles smaller than the 144x160
    content: their halos cross tile borders, so the tiles grow by different amounts.)"""
    stylizer = Stylizer(models["encoder"], models[family])
    content = rand_images(1, 3, 144, 160, seed=1)
    styles = [Style(rand_images(1, 3, 48, 40, seed=2)), Style(rand_images(1, 3, 24, 56, seed=3), 0.5)]
    options = replace(options, tile_size=tile)
    for _ in range(2):  # the second run takes both encodings from the cache
        listener, released = Listener(), []
        monkeypatch.setattr(Progress, "release", lambda self, units=None: released.append(units))
        stylizer.stylize(content, styles, options=options, progress=listener.progress())
        assert_bar_sane(listener.reports)
        assert {total for _, total in listener.reports} == {listener.reports[0][1]}
        assert released == []  # the forecast was exact: nothing left over to count as done at the end
    assert stylizer.cache.hits == 3
