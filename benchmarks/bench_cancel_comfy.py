"""How soon Cancel stops AdaAttN Stylize Frames, or AdaAttN Stylize on a large still, in a real ComfyUI server.

    COMFYUI_DIR=... COMFYUI_PYTHON=... python benchmarks/bench_cancel_comfy.py [--delays 4 8 12]
    COMFYUI_DIR=... COMFYUI_PYTHON=... python benchmarks/bench_cancel_comfy.py --still 2048 --delays 5 30 60

Starts ComfyUI (CPU) with this pack through the project's harness module (``$COMFY_HARNESS``,
by default ``../shared/tools/comfy_harness.py``), makes 48 frames of 640x360 from
``assets/inputs/bbb_frames``, and queues ``workflows/api/adaattn_frames_folder.json`` on them
(lite weights from ``python -m adaattn_model fetch``, 4 frames per chunk). For each delay it
waits until the frame node has reported progress, waits that many seconds more, POSTs
``/interrupt`` and times the websocket's ``execution_interrupted`` for the prompt. With
``--still N`` it queues ``workflows/api/adaattn_basic.json`` instead, on an N x N photo
(exact sampling, as shipped; the core tiles it when it chooses to) and cancels AdaAttN Stylize the
same way. After the cancels it queues the frames workflow once more to completion, to show the
server still runs prompts. Needs Pillow in ComfyUI's Python (ComfyUI requires it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 48
STILL_NAME = "still_%d.png"


def harness_module(path: Path):
    spec = importlib.util.spec_from_file_location("comfy_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_base(base: Path, python: str, still: int) -> None:
    from adaattn_model.models_folder import default_models_dir

    for d in ("custom_nodes", "input", "output", "temp", "user", "models/adaattn"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "adaattn").symlink_to(ROOT)
    for name in ("vgg_normalised.safetensors", "adain_decoder.safetensors"):
        (base / "models" / "adaattn" / name).symlink_to((default_models_dir() / name).resolve())
    # a copy: LoadImage refuses a link that leaves its input folder
    for name in ("starry_night_vangogh.jpg", "chelsea.png", "great_wave_hokusai.jpg"):  # the workflows' images
        shutil.copy(ROOT / "assets" / "inputs" / name, base / "input")
    script = (
        "import os, sys\nfrom PIL import Image\nsrc, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "names = sorted(os.listdir(src))\nos.makedirs(dst)\nfor i in range(n):\n"
        "    img = Image.open(os.path.join(src, names[i % len(names)])).convert('RGB').resize((640, 360))\n"
        "    img.save(os.path.join(dst, '%03d.png' % i))\n"
    )
    src, dst = ROOT / "assets" / "inputs" / "bbb_frames", base / "input" / "frames48"
    subprocess.run([python, "-c", script, str(src), str(dst), str(FRAMES)], check=True)
    if still:  # four turns of one photo: each cancel gets a content the node's encoding cache has not seen
        big = "import sys\nfrom PIL import Image\nn = int(sys.argv[3])\n"
        big += "im = Image.open(sys.argv[1]).convert('RGB').resize((n, n), Image.BICUBIC)\n"
        big += "for k in range(4):\n    im.rotate(90 * k).save(sys.argv[2] % k)\n"
        photo = ROOT / "assets" / "inputs" / "chelsea.png"
        subprocess.run([python, "-c", big, str(photo), str(base / "input" / STILL_NAME), str(still)], check=True)


def prompt() -> tuple[dict, str]:
    wf = json.loads((ROOT / "workflows" / "api" / "adaattn_frames_folder.json").read_text())
    wf = wf.get("prompt", wf)
    frames_node = None
    for node_id, node in wf.items():
        if node["class_type"] == "AdaAttNLoadFrames":
            node["inputs"].update(folder="frames48", first=0, count=0)
        if node["class_type"] == "AdaAttNStylizeFrames":
            node["inputs"]["frames_per_chunk"] = 4
            frames_node = node_id
    return wf, frames_node


def still_prompt(turn: int) -> tuple[dict, str]:
    wf = json.loads((ROOT / "workflows" / "api" / "adaattn_basic.json").read_text())
    wf = wf.get("prompt", wf)
    node = None
    for node_id, spec in wf.items():
        if spec["class_type"] == "AdaAttNStylize":
            content = spec["inputs"]["content"][0]
            wf[content]["inputs"]["image"] = STILL_NAME % (turn % 4)
            node = node_id
    return wf, node


def first_event(ws, pid: str, types: tuple[str, ...], node: str | None = None) -> tuple[float, dict] | None:
    for stamp, ev in list(ws.events):
        data = ev.get("data") or {}
        if ev.get("type") in types and data.get("prompt_id") == pid and (node is None or str(data.get("node")) == node):
            return stamp, ev
    return None


def wait_for(fn, timeout: float):
    end = time.time() + timeout
    while time.time() < end:
        found = fn()
        if found:
            return found
        time.sleep(0.02)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_DIR"), help="ComfyUI checkout ($COMFYUI_DIR)")
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON"), help="its Python ($COMFYUI_PYTHON)")
    default_harness = os.environ.get("COMFY_HARNESS", ROOT.parent / "shared" / "tools" / "comfy_harness.py")
    parser.add_argument("--harness", type=Path, default=Path(default_harness))
    parser.add_argument("--delays", type=float, nargs="+", default=[4.0, 8.0, 12.0],
                        help="seconds after the node's first progress event to press Cancel")  # fmt: skip
    parser.add_argument("--still", type=int, default=0, metavar="N",
                        help="cancel AdaAttN Stylize on an N x N still instead of the frame node")
    args = parser.parse_args()
    if not (args.comfy and args.python and args.harness.is_file()):
        parser.error("give --comfy, --python (or COMFYUI_DIR, COMFYUI_PYTHON) and the harness")
    sys.path.insert(0, str(ROOT))
    ch = harness_module(args.harness)
    base = Path(tempfile.mkdtemp(prefix="adaattn_cancel_"))
    make_base(base, args.python, args.still)
    wf, frames_node = prompt()
    port = ch.free_port()
    server = ch.ComfyServer(args.comfy, args.python, str(base), str(base / "server.log"), port, [], False)
    server.start()
    http = ch.Http(port)
    rows = []
    try:
        if not wait_for(lambda: _answers(http), 600):
            raise SystemExit(f"ComfyUI did not start; see {base / 'server.log'}")
        client = str(uuid.uuid4())
        ws = ch.MiniWebSocket(port, client)
        ws.start()
        ws.connected.wait(30)
        for turn, delay in enumerate(args.delays):
            if args.still:
                wf, frames_node = still_prompt(turn)
            _, resp = http.post("/prompt", {"prompt": wf, "client_id": client})
            if not isinstance(resp, dict) or "prompt_id" not in resp:
                raise SystemExit(f"ComfyUI refused the prompt: {resp}")
            pid = resp["prompt_id"]
            running = wait_for(lambda: first_event(ws, pid, ("progress",), frames_node), 900)
            if running is None:
                raise SystemExit("the node never reported progress")
            wait_for(lambda: time.time() >= running[0] + delay, delay + 1)
            pressed = time.time()
            http.post("/interrupt", {})
            ended = wait_for(lambda: first_event(ws, pid, ("execution_interrupted", "execution_success",
                                                           "execution_error")), 900)  # fmt: skip
            progress = [ev["data"] for _, ev in ws.events if ev.get("type") == "progress"
                        and (ev.get("data") or {}).get("prompt_id") == pid]  # fmt: skip
            rows.append((delay, ended[0] - pressed if ended else None, ended[1]["type"] if ended else "timeout",
                         progress[-1]["value"] if progress else 0, progress[-1]["max"] if progress else 0))  # fmt: skip
            wait_for(lambda: not (http.get("/queue")[1] or {}).get("queue_running"), 900)
        basic = json.loads((ROOT / "workflows" / "api" / "adaattn_basic.json").read_text())
        _, resp = http.post("/prompt", {"prompt": basic.get("prompt", basic), "client_id": client})
        after = wait_for(lambda: first_event(ws, resp["prompt_id"], ("execution_success", "execution_error",
                                                                      "execution_interrupted")), 900)  # fmt: skip
        next_prompt = after[1]["type"] if after else "timeout"
        ws.stop()
    finally:
        server.stop()
    what = f"a {args.still}x{args.still} still, exact" if args.still else f"{FRAMES} frames 640x360, 4 per chunk"
    print(f"{what}, lite, CPU")
    print(f"{'cancel after s':>14} {'stopped after s':>16} {'end':>22} {'bar at':>10}")
    for delay, latency, end, value, total in rows:
        shown = f"{latency:.2f}" if latency is not None else "-"
        print(f"{delay:14.1f} {shown:>16} {end:>22} {f'{value}/{total}':>10}")
    print(f"the next prompt (workflows/api/adaattn_basic.json): {next_prompt}")


def _answers(http) -> bool:
    try:
        return http.get("/system_stats", timeout=5)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
