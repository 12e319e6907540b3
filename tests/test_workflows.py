"""Every shipped workflow (canvas and API format) against the node definitions.

Our nodes' definitions come from the pack itself; ComfyUI's core nodes from a snapshot of
a real ComfyUI 0.33 server's /object_info (tests/data/core_nodes.json). The real-server
run of the same files is test_comfy_server.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import comfy_stubs
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CANVAS = sorted((ROOT / "workflows").glob("*.json"))
API = sorted((ROOT / "workflows" / "api").glob("*.json"))
# Workflows saved with earlier node interfaces (API format): they must keep validating.
LEGACY = sorted((Path(__file__).parent / "data" / "legacy").glob("*.json"))
CORE = json.loads((Path(__file__).parent / "data" / "core_nodes.json").read_text())["nodes"]
FRONTEND_ONLY = {"MarkdownNote", "Note", "Reroute", "PrimitiveNode"}
INPUT_FILES = {p.name for p in (ROOT / "assets" / "inputs").iterdir()}
WEIGHT_FILES = {"vgg_normalised.safetensors", "adain_decoder.safetensors", "adaattn_official.safetensors",
                "adaattn_official_video.safetensors"}  # fmt: skip


@pytest.fixture(scope="module")
def definitions(release, tmp_path_factory):
    """class_type -> {"input": {...}, "output": [...]} for our nodes and the core ones used."""
    models = tmp_path_factory.mktemp("wf_models")
    (models / "adaattn").mkdir()
    saved = dict(sys.modules)
    _, modules = comfy_stubs.build(models)
    modules.update(comfy_stubs.video_api(object))  # the video node registers only beside ComfyUI's video API
    sys.modules.update(modules)
    try:
        pack = comfy_stubs.import_pack()
        ours = {
            name: {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                   "deprecated": getattr(cls, "DEPRECATED", False)}  # fmt: skip
            for name, cls in pack.NODE_CLASS_MAPPINGS.items()
        }
    finally:
        for name in list(sys.modules):
            if name not in saved:
                del sys.modules[name]
        sys.modules.update(saved)
    return {**{k: {"input": v["input"], "output": v["output"]} for k, v in CORE.items()}, **ours}


def link_accepted(output_type, input_type) -> bool:
    """ComfyUI's link rule (comfy_execution/validation.py): equal, '*', or overlapping comma-separated sets."""
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    if not isinstance(output_type, str) or not isinstance(input_type, str):
        return False
    return bool({t.strip() for t in output_type.split(",")} & {t.strip() for t in input_type.split(",")})


def input_spec(definition: dict, name: str):
    """(kind, options) of input ``name``, following dotted names into dynamic combos."""
    head, _, rest = name.partition(".")
    for section in ("required", "optional", "hidden"):
        if head in definition["input"].get(section, {}):
            spec = definition["input"][section][head]
            break
    else:
        return None
    return ("DYNAMIC", spec, rest) if rest else (spec[0], spec[1] if len(spec) > 1 else {})


def check_value(kind, options, value, where):
    if isinstance(kind, list):  # a combo
        if kind:
            assert value in kind, f"{where}: {value!r} not among the options"
        else:  # file lists that are empty here: the file must be one we ship or fetch
            assert value in INPUT_FILES | WEIGHT_FILES, f"{where}: unknown file {value!r}"
    elif kind == "COMBO":
        choices = options.get("options", [])
        assert value in choices or value in INPUT_FILES, f"{where}: {value!r} not among the options"
    elif kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: not a number"
        if kind == "INT":
            assert float(value).is_integer(), f"{where}: not an integer"
        assert options.get("min", -float("inf")) <= value <= options.get("max", float("inf")), f"{where}: out of range"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: not a string"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: not a boolean"
    elif kind == "COMFY_DYNAMICCOMBO_V3":
        keys = [o["key"] for o in options.get("options", [])]
        assert value in keys, f"{where}: {value!r} not among {keys}"
    else:
        raise AssertionError(f"{where}: a {kind} input needs a link, not the value {value!r}")


@pytest.mark.parametrize("path", API + LEGACY, ids=lambda p: p.name)
def test_api_workflow_matches_the_node_definitions(definitions, path):
    graph = json.loads(path.read_text())
    assert graph, "empty workflow"
    outputs = set()
    for node_id, node in graph.items():
        cls = node["class_type"]
        assert cls in definitions, f"{path.name}: unknown node type {cls}"
        definition = definitions[cls]
        if cls in CORE and CORE[cls]["output_node"] or cls.startswith("Save"):
            outputs.add(node_id)
        required = definition["input"].get("required", {})
        for name in required:
            if required[name][0] != "COMFY_DYNAMICCOMBO_V3" or name in node["inputs"]:
                assert name in node["inputs"], f"{path.name}#{node_id} {cls}: required input {name} missing"
        values = node["inputs"]
        for name, value in values.items():
            where = f"{path.name}#{node_id} {cls}.{name}"
            spec = input_spec(definition, name)
            assert spec is not None, f"{where}: no such input"
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = graph.get(value[0])
                assert source is not None, f"{where}: links to missing node {value[0]}"
                out_types = definitions[source["class_type"]]["output"]
                assert value[1] < len(out_types), f"{where}: output {value[1]} does not exist"
                assert link_accepted(out_types[value[1]], spec[0]), f"{where}: {out_types[value[1]]} into {spec[0]}"
                continue
            if spec[0] == "DYNAMIC":
                base = values[name.split(".")[0]]
                nested = spec[1][1]
                for part in spec[2].split("."):
                    option = next(o for o in nested["options"] if o["key"] == base)
                    entry = {**option["inputs"].get("required", {}), **option["inputs"].get("optional", {})}[part]
                    nested = entry[1]
                    base = values.get(f"{name.split('.')[0]}.{part}", value)
                check_value(entry[0], entry[1], value, where)
                continue
            check_value(spec[0], spec[1], value, where)
    assert outputs, f"{path.name}: no output node, so nothing would run"


@pytest.mark.parametrize("path", CANVAS, ids=lambda p: p.name)
def test_canvas_workflow_is_consistent_and_has_a_twin_and_thumbnail(definitions, path):
    workflow = json.loads(path.read_text())
    nodes = {n["id"]: n for n in workflow["nodes"]}
    twin = json.loads((path.parent / "api" / path.name).read_text())
    for node in nodes.values():
        cls = node["type"]
        if cls in FRONTEND_ONLY:
            continue
        assert cls in definitions, f"{path.name}: unknown node type {cls}"
        assert twin[str(node["id"])]["class_type"] == cls, f"{path.name}: node {node['id']} differs from its API twin"
        widgets = [i for i in node.get("inputs", []) if "widget" in i]
        assert len(node.get("widgets_values") or []) == len(widgets), f"{path.name}: {cls} widget count"
        for widget, value in zip(widgets, node.get("widgets_values", [])):
            name = widget["widget"]["name"]
            if widget.get("link") is not None or name not in twin[str(node["id"])]["inputs"]:
                continue
            assert twin[str(node["id"])]["inputs"][name] == value, f"{path.name}: {cls}.{name} differs from the twin"
    real = [n for n in nodes.values() if n["type"] not in FRONTEND_ONLY]
    assert len(real) == len(twin), f"{path.name}: node count differs from the API twin"
    for link in workflow["links"]:
        link_id, origin, origin_slot, target, target_slot, kind = link
        out_kind = nodes[origin]["outputs"][origin_slot]["type"]
        in_slot = nodes[target]["inputs"][target_slot]
        assert out_kind == kind and link_accepted(kind, in_slot["type"]), (
            f"{path.name}: link {link_id}: {out_kind} into {in_slot['type']}"
        )
        assert in_slot["link"] == link_id and link_id in nodes[origin]["outputs"][origin_slot]["links"]
        declared = definitions[nodes[target]["type"]]
        spec = input_spec(declared, in_slot["name"])
        assert spec is not None, f"{path.name}: link {link_id} into unknown input {in_slot['name']}"
        is_widget = isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "COMBO")
        assert is_widget or link_accepted(kind, spec[0]), f"{path.name}: link {link_id}: {kind} into {spec[0]}"
        assert definitions[nodes[origin]["type"]]["output"][origin_slot] == kind
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{path.name}: no thumbnail"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and max(image.size) >= 256


def test_every_api_workflow_has_a_canvas_twin():
    assert {p.name for p in API} == {p.name for p in CANVAS}
    assert len(API) >= 6


def test_workflows_use_only_core_nodes_and_ours(definitions):
    for path in API:
        for node in json.loads(path.read_text()).values():
            assert node["class_type"].startswith("AdaAttN") or node["class_type"] in CORE


def test_shipped_workflows_use_no_deprecated_node(definitions):
    deprecated = {name for name, d in definitions.items() if d.get("deprecated")}
    assert deprecated == {"AdaAttNEncode"}
    for path in API:
        assert not {n["class_type"] for n in json.loads(path.read_text()).values()} & deprecated, path.name
    for path in CANVAS:
        assert not {n["type"] for n in json.loads(path.read_text())["nodes"]} & deprecated, path.name
    for path in LEGACY:  # the saved old workflows do use it: that is what they test
        assert {n["class_type"] for n in json.loads(path.read_text()).values()} & deprecated, path.name


def test_every_link_carries_the_socket_type_of_both_ends(definitions):
    """Content features only into content inputs, style features only into style inputs, in every workflow."""
    seen = set()
    for path in API:
        graph = json.loads(path.read_text())
        for node_id, node in graph.items():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    out_type = definitions[graph[value[0]]["class_type"]]["output"][value[1]]
                    in_type = input_spec(definitions[node["class_type"]], name)[0]
                    assert in_type in (out_type, "*"), f"{path.name}#{node_id}.{name}: {out_type} into {in_type}"
                    seen.add(out_type)
    for path in CANVAS:
        workflow = json.loads(path.read_text())
        nodes = {n["id"]: n for n in workflow["nodes"]}
        for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
            assert nodes[target]["inputs"][target_slot]["type"] in (kind, "*"), f"{path.name}: link {link_id}"
            seen.add(kind)
    assert {"ADAATTN_MODEL", "ADAATTN_CONTENT", "ADAATTN_STYLE"} <= seen
