"""The train command: schedule, data, checkpoints and resume, refusal of bad input, several processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

try:  # a torchvision built for another torch fails with errors other than ImportError
    import torchvision  # noqa: F401
except Exception as error:  # noqa: BLE001
    pytest.skip(f"training needs a torchvision that matches torch (the train extra): {error}", allow_module_level=True)

from adaattn_model.tools.cli import main
from adaattn_model.training.checkpoint import load_state
from adaattn_model.training.data import EpochSampler, StyleTransferData, list_images
from adaattn_model.training.loop import TrainConfig, build_model, learning_rate
from adaattn_model.training.report import read_log
from adaattn_model.weights import load_model, read_weights

ROOT = Path(__file__).resolve().parent.parent


def write_images(folder: Path, count: int, seed: int, size=(40, 44)) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / ("nested" if i % 2 else "")  # folders are read recursively
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img{i}.png")
    return folder


@pytest.fixture()
def images(tmp_path):
    return write_images(tmp_path / "content", 4, 1), write_images(tmp_path / "style", 3, 2, size=(48, 36))


def train_args(release, images, run, *extra):
    content, style = images
    return ["train", "--content", str(content), "--style", str(style), "-o", str(run),
            "--encoder", str(release["out"] / "vgg_normalised.safetensors"), "--load-size", "40",
            "--crop-size", "32", "--batch-size", "2", "--workers", "0", "--quiet", "--seed", "5", *extra]  # fmt: skip


def test_schedule_is_the_reference():
    config = TrainConfig("c", "s", "r")
    got = [learning_rate(config, e) for e in range(5)]
    assert got == pytest.approx([2e-4, 2e-4, 6e-5, 1.8e-5, 5.4e-6])


def test_reference_init_and_fine_tune_init(release):
    model = build_model(TrainConfig("c", "s", "r", seed=3))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.std().item() - 0.02) < 1e-3 and abs(weights.mean().item()) < 1e-3
    assert all(bool((c.bias == 0).all()) for c in convs)
    file = release["out"] / "adaattn_official.safetensors"
    tuned = build_model(TrainConfig("c", "s", "r", init=str(file)))
    _, tensors, _ = read_weights(file)
    assert all(torch.equal(v, tensors[k]) for k, v in tuned.state_dict().items())
    with pytest.raises(ValueError, match="official-video weights"):
        build_model(TrainConfig("c", "s", "r", init=str(release["out"] / "adaattn_official_video.safetensors")))


def test_samples_are_deterministic_and_pairs_stay_close(images):
    contents, styles = list_images(images[0], "content"), list_images(images[1], "style")
    assert len(contents.paths) == 4 and contents.skipped == 0
    data = StyleTransferData(contents.paths, styles.paths, load_size=40, crop_size=32, seed=9, pair="shift", shift=2)
    a, b = data[(1, 0)], data[(1, 0)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["content"].shape == (3, 32, 32) and 0 <= a["content"].min() and a["content"].max() <= 1
    assert not torch.equal(data[(1, 1)]["content"], a["content"]) or not torch.equal(data[(1, 1)]["style"], a["style"])
    # the pair is the same resized image cropped at most 2 pixels away: some shift matches exactly
    assert any(
        torch.equal(a["pair"][:, max(0, dy) : 32 + min(0, dy), max(0, dx) : 32 + min(0, dx)],
                    a["content"][:, max(0, -dy) : 32 + min(0, -dy), max(0, -dx) : 32 + min(0, -dx)])
        for dy in range(-2, 3) for dx in range(-2, 3)
    )  # fmt: skip


def test_crop_is_a_window_of_the_bicubic_resize(tmp_path):
    """Known answer: with load = crop there is nothing random but the flip."""
    folder = write_images(tmp_path / "c", 1, 3, size=(50, 30))
    paths = list_images(folder, "content").paths
    data = StyleTransferData(paths, paths, load_size=32, crop_size=32, flip=False)
    expected = np.asarray(Image.open(paths[0]).convert("RGB").resize((32, 32), Image.BICUBIC))
    got = (data[(0, 0)]["content"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, expected)


def test_epoch_sampler_splits_and_resumes():
    full = list(EpochSampler(10, rank=0, world=1, seed=1, epoch=2))
    halves = [list(EpochSampler(10, rank=r, world=2, seed=1, epoch=2)) for r in range(2)]
    assert sorted(i for i, _ in full) == list(range(10)) and {e for _, e in full} == {2}
    assert sorted(i for h in halves for i, _ in h) == list(range(10))
    assert list(EpochSampler(10, rank=0, world=1, seed=1, epoch=2, skip=4)) == full[4:]
    assert full != list(EpochSampler(10, rank=0, world=1, seed=1, epoch=3))


def test_empty_or_missing_folder_is_one_error_and_writes_nothing(release, images, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not an image")
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    assert main(train_args(release, (empty, images[1]), run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no readable image (1 unreadable)" in err[0]
    assert not run.exists()
    assert main(train_args(release, (tmp_path / "missing", images[1]), run)) == 2
    assert "does not exist" in capsys.readouterr().err and not run.exists()


def test_bad_settings_are_refused_before_anything_is_written(release, images, tmp_path, capsys):
    run = tmp_path / "run"
    for extra in (["--crop-size", "40"], ["--crop-size", "30", "--family", "official-video"],
                  ["--loss-layers", "relu1_1,relu2_1"], ["--batch-size", "0"], ["--lr", "-1"]):  # fmt: skip
        assert main(train_args(release, images, run, *extra)) == 2, extra
        assert capsys.readouterr().err.startswith("error: ")
        assert not run.exists()


def test_image_run_writes_loadable_weights_log_samples_and_skips_unreadable(release, images, tmp_path, capsys):
    (images[0] / "broken.png").write_bytes(b"\x89PNG but not really")
    run = tmp_path / "run"
    flags = ("--steps", "2", "--sample-every", "1", "--checkpoint-activations", "--amp", "bf16")
    assert main(train_args(release, images, run, *flags)) == 0
    err = capsys.readouterr().err
    assert "1 unreadable files skipped" in err
    model = load_model(run / "model.safetensors")
    assert model.family.name == "official-image"
    rows = read_log(run / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2]
    assert all(float(r["total"]) > 0 and r["content"] == "0" for r in rows)
    assert (run / "samples" / "step_0000002.jpg").is_file() and (run / "loss_curves.png").is_file()
    assert load_state(run)["step"] == 2
    assert main(["info", str(run / "model.safetensors")]) == 0
    assert "official-image" in capsys.readouterr().out
    assert main(train_args(release, images, run, "--steps", "2")) == 2  # no silent overwrite
    assert "--resume" in capsys.readouterr().err


def test_resumed_video_run_equals_uninterrupted_run(release, images, tmp_path):
    """Stop at step 2, resume to 4: the loss curve and the weights equal a straight run to 4, bit for bit."""
    video = ("--family", "official-video", "--lambda-similarity", "100", "--save-every", "2")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(train_args(release, images, straight, "--steps", "4", *video)) == 0
    assert main(train_args(release, images, resumed, "--steps", "2", *video)) == 0
    assert main(["train", "--resume", str(resumed), "--steps", "4", "--quiet"]) == 0
    a, b = read_log(straight / "log.csv"), read_log(resumed / "log.csv")
    assert [int(r["step"]) for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in ("epoch", "lr", "seed", "content", "global", "local", "similarity", "total"):
            assert ra[key] == rb[key], (ra["step"], key)
    assert float(a[0]["similarity"]) > 0
    _, wa, _ = read_weights(straight / "model.safetensors")
    _, wb, _ = read_weights(resumed / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    initial = build_model(TrainConfig("c", "s", "r", family="official-video", seed=5)).state_dict()
    assert not torch.equal(wa["decoder.conv1_1.weight"], initial["decoder.conv1_1.weight"])  # it did train


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="gloo under torchrun is tested on Linux")
def test_two_processes_equal_one_with_the_same_global_batch(release, images, tmp_path):
    """torchrun with 2 CPU processes (gloo, batch 2 each) gives the parameters of 1 process with batch 4."""
    # Adam's first steps are about lr * sign(gradient): where a gradient is near zero, float32 round-off
    # (batch 4 vs 2 + 2) flips the sign and moves a weight by 2 lr. A large epsilon keeps the update
    # proportional to the gradient, so what is compared is the averaged gradient, step after step.
    # Pairs of different images: shifted crops give near-identical features, whose 1 - cos is round-off.
    init = str(release["out"] / "adaattn_official_video.safetensors")
    common = [
        "--family",
        "official-video",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--init",
        init,
        "--adam-eps",
        "1",
        "--lambda-similarity",
        "10",
        "--pairs",
        "different",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "adaattn_model", *train_args(release, images, one), *common],
                   check=True, env=env, cwd=ROOT, capture_output=True)  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "adaattn_model", *train_args(release, images, two), *common],
        check=False, env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    _, w0, _ = read_weights(init)
    _, w1, _ = read_weights(one / "model.safetensors")
    _, w2, _ = read_weights(two / "model.safetensors")
    # What training did to each tensor must agree: the two runs' updates differ by round-off only (the
    # gradient of batch 4 vs the mean of two batches of 2; per element up to a few 1e-6 where a gradient
    # nearly cancels, and a tiny update is only resolved to the float32 spacing of its weight), so the
    # updates are compared as a whole, to 1%: a missing or doubled all-reduce, or a gradient summed
    # instead of averaged, makes them differ by tens of percent.
    for k in w1:
        step_one, step_two = w1[k] - w0[k], w2[k] - w0[k]
        resolution = 8 * torch.finfo(torch.float32).eps * w1[k].norm()
        assert (step_two - step_one).norm() <= 1e-2 * step_one.norm() + resolution, k
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    moved = max((w1[k] - w0[k]).abs().max().item() for k in w1)
    assert moved > 1e-4  # the runs did train
    assert read_log(one / "log.csv")[0]["total"][:6] == read_log(two / "log.csv")[0]["total"][:6]
