"""Shared fixtures: synthetic released weights, converted models, real lite weights, test images."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # oracle.py and synthetic.py beside the tests

import synthetic  # noqa: E402

from adaattn_model.models_folder import default_models_dir
from adaattn_model.tools.convert import convert  # noqa: E402
from adaattn_model.tools.fetch import installed  # noqa: E402
from adaattn_model.weights import load_encoder, load_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
os.environ["ADAATTN_NO_FETCH"] = "1"  # tests never download on first use (subprocesses included); fetch tests clear it
INPUTS = ROOT / "assets" / "inputs"  # licensed photos and paintings shipped with the project


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition", interval: float = 0.01) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it holds; fail after a deadline meant never to be
    reached (never a fixed wait: a busy machine only makes the poll take longer)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:g}s")
        time.sleep(interval)


def python_m(module: str, *args) -> list[str]:
    """The command ``python -m module args`` for a subprocess a test stops with SIGINT: it takes Ctrl-C even
    when the test run itself was started with SIGINT ignored (a shell's ``&`` or ``nohup`` passes that on to
    every child, and Python then installs no KeyboardInterrupt handler)."""
    code = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")  # fmt: skip
    return [sys.executable, "-c", code, *map(str, args)]


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    """The authors' release tree with random weights, converted; returns paths and states."""
    root = tmp_path_factory.mktemp("release")
    states = synthetic.write_release(root)
    adain = synthetic.write_adain(root / "adain")
    out = root / "converted"
    convert([root / "checkpoints", root / "attn_adain_video"], out)
    convert([root / "adain" / "decoder.pth"], out)
    return {"root": root, "out": out, "states": {**states, "adain_decoder": adain["adain_decoder"]}}


@pytest.fixture(scope="session")
def models(release):
    out = release["out"]
    return {
        "encoder": load_encoder(out / "vgg_normalised.safetensors"),
        "official-image": load_model(out / "adaattn_official.safetensors"),
        "official-video": load_model(out / "adaattn_official_video.safetensors"),
        "lite": load_model(out / "adain_decoder.safetensors"),
    }


@pytest.fixture(scope="session")
def real_models():
    """The real lite weights from 'python -m adaattn_model fetch' (skips when absent)."""
    folder = default_models_dir()
    if not installed(folder):
        pytest.skip(f"real lite weights not in {folder}; run 'python -m adaattn_model fetch'")
    return {
        "dir": folder,
        "encoder": load_encoder(folder / "vgg_normalised.safetensors"),
        "lite": load_model(folder / "adain_decoder.safetensors"),
    }


def rand_images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def double_state(state):
    return {k: v.double() for k, v in state.items()}
