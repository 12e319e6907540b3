"""End to end in a real ComfyUI server: the pack imports and every shipped workflow runs.

Runs only when a ComfyUI checkout and its Python are given:

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python python -m pytest tests/test_comfy_server.py

It uses the harness ``comfy_harness.py`` (``$COMFY_HARNESS``, by default the project's
sibling ``shared/tools/`` folder), the lite weights from ``python -m adaattn_model fetch``,
and the images in ``assets/inputs``; besides the shipped workflows it runs the saved ones
with earlier node interfaces (``tests/data/legacy``). With ``$COMFY_NODE_PATH`` (a node_modules folder
holding playwright-core) it also loads the canvas workflows in the real frontend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import comfy_stubs
import pytest

from adaattn_model.models_folder import default_models_dir
from adaattn_model.tools.fetch import installed

ROOT = Path(__file__).resolve().parent.parent
LEGACY = Path(__file__).parent / "data" / "legacy"
HARNESS = Path(os.environ.get("COMFY_HARNESS", ROOT.parent / "shared" / "tools" / "comfy_harness.py"))

pytestmark = pytest.mark.skipif(
    not (os.environ.get("COMFYUI_DIR") and os.environ.get("COMFYUI_PYTHON")),
    reason="set COMFYUI_DIR and COMFYUI_PYTHON to run the real-ComfyUI test",
)


def node_table(tmp_path: Path) -> dict:
    """id -> (title, search aliases, advanced widgets), from the pack imported against stub ComfyUI modules."""
    saved = dict(sys.modules)
    _, modules = comfy_stubs.build(tmp_path / "stub_models")
    sys.modules.update(modules)
    try:
        comfy_stubs.import_pack()
        registry = sys.modules[f"{comfy_stubs.PACK}.nodes.registry"]
        table = {}
        for node_id, entry in registry.NODES.items():  # every row: a real ComfyUI 0.33 has the video API too
            spec = entry.cls.INPUT_TYPES()
            advanced = {n for sec in ("required", "optional") for n, e in spec.get(sec, {}).items()
                        if len(e) > 1 and e[1].get("advanced")}  # fmt: skip
            table[node_id] = (entry.title, list(entry.aliases), advanced)
        return table
    finally:
        for name in list(sys.modules):
            if name not in saved:
                del sys.modules[name]
        sys.modules.update(saved)


def test_every_workflow_runs_in_a_real_comfyui(tmp_path):
    if not HARNESS.is_file():
        pytest.skip(f"harness not found at {HARNESS}; set COMFY_HARNESS")
    weights = default_models_dir()
    if not installed(weights):
        pytest.skip(f"lite weights not in {weights}; run 'python -m adaattn_model fetch'")
    models = tmp_path / "models"
    (models / "adaattn").mkdir(parents=True)
    for name in ("vgg_normalised.safetensors", "adain_decoder.safetensors"):
        (models / "adaattn" / name).symlink_to(weights / name)
    out = tmp_path / "report"
    command = [
        sys.executable, str(HARNESS), "--comfy", os.environ["COMFYUI_DIR"], "--python", os.environ["COMFYUI_PYTHON"],
        "--pack", str(ROOT), "--workflows", str(ROOT / "workflows" / "*.json"),
        "--workflows", str(ROOT / "workflows" / "api" / "*.json"), "--workflows", str(LEGACY / "*.json"),
        "--pack-name", "comfyui-adaattn", "--inputs", str(ROOT / "assets" / "inputs"),
        "--models", str(models), "--out", str(out), "--timeout", "900",
    ]  # fmt: skip
    if os.environ.get("COMFY_NODE_PATH"):
        command += ["--browser", "--node-path", os.environ["COMFY_NODE_PATH"]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    summary = json.loads((out / "summary.json").read_text())
    print(result.stderr[-3000:])
    assert result.returncode == 0 and summary["ok"], summary["problems"]
    pack = summary["pack"]
    assert not pack["import_failed"]
    # what the real server serves is the pack's one node table: ids, titles, search aliases, advanced widgets
    served_nodes = json.loads((out / "object_info_pack.json").read_text())
    table = node_table(tmp_path)
    assert set(served_nodes) == set(table) and pack["node_count"] == len(table)
    for node_id, (title, aliases, advanced) in table.items():
        info = served_nodes[node_id]
        assert info["display_name"] == title and info["search_aliases"] == aliases, node_id
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        assert {n for n, e in inputs.items() if len(e) > 1 and e[1].get("advanced")} == advanced, node_id
    assert served_nodes["AdaAttNEncode"].get("deprecated") is True
    served = pack["example_workflows_served"]
    canvas = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    assert sorted(s["name"] for s in served) == canvas
    assert all(s["status"] == 200 and s["format"] == "ui" for s in served)
    runs = {(w["format"], w["name"]): w for w in summary["workflows"]}
    shipped = [(f, p.name) for f in ("ui", "api") for p in (ROOT / "workflows").glob("*.json")]
    assert sorted(runs) == sorted(shipped + [("api", p.name) for p in LEGACY.glob("*.json")])
    for key, run in runs.items():
        assert run["status"] == "success" and run["outputs"], key
        assert all(o["exists"] and o["view_ok"] for o in run["outputs"]), key
    frames = runs[("api", "adaattn_video.json")]["ws"]["progress"]
    # the bar counts the engine's steps (layers, bands, attention blocks) for the 24 frames and ends full
    assert any(p["class_type"] == "AdaAttNStylizeFrames" and p["last"] == p["max"] > 24 for p in frames.values())
    if "browser" in summary:
        browser = summary["browser"]["result"]
        assert browser["pack_in_template_browser"] and not browser["missing_types"] and not browser["page_errors"]
        assert not summary["browser"]["converter_diff"]
