"""The batch client against two real ComfyUI servers, one of them killed mid-batch.

Runs only when a ComfyUI checkout and its Python are given, and the lite weights are fetched:

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest tests/test_batch_real.py -s

Each server gets its own temporary base folder (this project linked into ``custom_nodes``, the
lite weights into ``models/adaattn``, an empty ``input``) and runs on the CPU on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import wait_until

from adaattn_model.models_folder import default_models_dir
from adaattn_model.tools.fetch import installed

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "assets" / "inputs"
CONTENTS = ["chelsea.png", "grace_hopper.jpg", "rocket.jpg"]
STYLES = ["great_wave_hokusai.jpg", "udnie_picabia.jpg"]

pytestmark = [
    pytest.mark.skipif(
        not (os.environ.get("COMFYUI_DIR") and os.environ.get("COMFYUI_PYTHON")),
        reason="set COMFYUI_DIR and COMFYUI_PYTHON to run the batch client against real ComfyUI servers",
    ),
    pytest.mark.slow,
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealServer:
    """One ComfyUI process on 127.0.0.1 with a base folder of its own."""

    def __init__(self, base: Path, weights: Path):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for sub in ("custom_nodes", "input", "output", "temp", "user", "models/adaattn"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "custom_nodes" / "ComfyUI-AdaAttN").symlink_to(ROOT, target_is_directory=True)
        for name in ("vgg_normalised.safetensors", "adain_decoder.safetensors"):
            (base / "models" / "adaattn" / name).symlink_to(weights / name)
        self.log = base / "server.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        comfy = Path(os.environ["COMFYUI_DIR"])
        known = (comfy / "comfy" / "cli_args.py").read_text(encoding="utf-8")
        cmd = [
            os.environ["COMFYUI_PYTHON"],
            "-u",
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        b = self.base
        for flag, *values in (
            ("--base-directory", str(b)),
            ("--input-directory", str(b / "input")),
            ("--output-directory", str(b / "output")),
            ("--temp-directory", str(b / "temp")),
            ("--user-directory", str(b / "user")),
            ("--database-url", f"sqlite:///{b / 'comfyui.db'}"),
            ("--disable-auto-launch",),
            ("--disable-api-nodes",),
        ):
            if f'"{flag}"' in known:  # only the flags this ComfyUI has
                cmd += [flag, *values]
        return cmd

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command(), cwd=os.environ["COMFYUI_DIR"], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)  # fmt: skip

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"ComfyUI exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/system_stats", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 300) -> None:
        try:
            wait_until(self.answers, timeout, "ComfyUI to answer", interval=0.5)
        except AssertionError as error:
            pytest.fail(f"{error}:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """A crash: SIGKILL, no goodbye."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(self.proc.pid, sig)
                self.proc.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    weights = default_models_dir()
    if not installed(weights):
        pytest.skip(f"lite weights not in {weights}; run 'python -m adaattn_model fetch'")
    made = [RealServer(tmp_path_factory.mktemp(f"comfy{i}"), weights) for i in range(2)]
    try:
        for server in made:
            server.start()
        for server in made:
            server.wait_ready()
        yield made
    finally:
        for server in made:
            server.stop()


def batch(*args) -> list[str]:
    return [sys.executable, "-m", "adaattn_batch", *map(str, args), "--poll", "0.5", "--probe-interval", "2"]


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}  # fmt: skip


def test_grid_over_two_servers_one_killed_mid_batch(servers, tmp_path):
    a, b = servers
    out = tmp_path / "out"
    command = batch(ROOT / "workflows" / "api" / "adaattn_basic.json",
                    "--content", *(INPUTS / c for c in CONTENTS), "--style", *(INPUTS / s for s in STYLES),
                    "-o", out, "--server", a.url, "--server", b.url,
                    "--set", "AdaAttN Stylize.style_max_side=256", "--job-timeout", "600")  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_with = None
    manifest = out / "adaattn_batch.json"

    def b_killed_mid_batch() -> bool:
        """Kill B once one of its jobs is done and another queued or running there; also stop when the batch
        ended first (the assertion below then says B never got there)."""
        nonlocal killed_with
        if proc.poll() is not None:
            return True
        try:
            jobs = json.loads(manifest.read_text())["jobs"]
        except (OSError, ValueError, KeyError):
            return False
        on_b = {k: j["state"] for k, j in jobs.items() if j.get("server") == b.url}
        if "done" in on_b.values() and "submitted" in on_b.values():
            b.kill()
            killed_with = on_b
        return killed_with is not None

    try:
        wait_until(b_killed_mid_batch, 600, "server B to have a finished and an unfinished job", interval=0.2)
    except AssertionError:
        proc.kill()
        raise
    log = proc.communicate(timeout=600)[0]
    print(f"\n--- batch (server B {b.url} killed when its jobs were {killed_with}) ---\n{log}")
    assert killed_with, "server B never had a finished and an unfinished job at once"
    assert proc.returncode == 0, log
    assert "is down" in log
    expected = sorted(f"{Path(c).stem}__{Path(s).stem}.png" for c in CONTENTS for s in STYLES)
    assert sorted(files(out)) == sorted(expected + ["adaattn_batch.json"])
    for name in expected:
        content = next(c for c in CONTENTS if name.startswith(Path(c).stem + "__"))
        size = png_size(out / name)
        print(f"{name}: PNG {size[0]}x{size[1]}, {(out / name).stat().st_size} bytes")
        assert size == png_size_any(INPUTS / content)
    jobs = json.loads(manifest.read_text())["jobs"]
    assert all(j["state"] == "done" for j in jobs.values())
    servers_used = [j["server"] for j in jobs.values()]
    assert servers_used.count(b.url) >= 1 and servers_used.count(a.url) >= 1
    assert any(e["kind"] == "lost" for j in jobs.values() for e in j["errors"])

    before = files(out)
    rerun = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    print(f"--- rerun ---\n{rerun.stdout}{rerun.stderr}")
    assert rerun.returncode == 0 and "0 done, 6 skipped, 0 failed" in rerun.stdout
    assert files(out) == before  # nothing rewritten, the manifest included


def png_size_any(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_frames_in_ranges_on_a_real_server(servers, tmp_path):
    a = servers[0]
    if a.proc.poll() is not None:
        pytest.skip("server A is not running")
    frames = INPUTS / "bbb_frames"
    out = tmp_path / "frames_out"
    command = batch(ROOT / "workflows" / "api" / "adaattn_frames_folder.json", "--frames", frames, "--range", "3",
                    "--warmup", "1", "--style", INPUTS / "starry_night_vangogh.jpg", "-o", out, "--server", a.url,
                    "--set", "AdaAttN Stylize Frames.style_max_side=256")  # fmt: skip
    result = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(f"\n--- frames batch ---\n{result.stdout}{result.stderr}")
    assert result.returncode == 0
    names = sorted(p.name for p in frames.iterdir())
    assert sorted(files(out)) == sorted(names + ["adaattn_batch.json"])
    for name in names:
        assert png_size(out / name) == png_size_any(frames / name)
    jobs = json.loads((out / "adaattn_batch.json").read_text())["jobs"]
    assert sorted(jobs) == ["frame_0048-frame_0050", "frame_0051-frame_0053", "frame_0054-frame_0055"]
    before = files(out)
    rerun = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    print(f"--- rerun ---\n{rerun.stdout}{rerun.stderr}")
    assert rerun.returncode == 0 and "0 done, 3 skipped, 0 failed" in rerun.stdout
    assert files(out) == before
