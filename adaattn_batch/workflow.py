"""API-format workflows: loading, naming an input (``NODE.INPUT``), bindings and fixed overrides.

NODE is a node id (``"4"``, ``"12:5"``) or a node title (``_meta.title``, what the canvas
shows). A title that several nodes share, or one that is also another node's id, is an error:
use the id. INPUT is the name of one of the node's inputs in the API format (``image``,
``strength``, ``format.codec``); inputs wired to another node cannot be set.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BatchError


@dataclass(frozen=True)
class Target:
    """One input of one node."""

    node: str  # node id
    input: str
    label: str  # for messages: 'Content.image (node 2, LoadImage)'

    @property
    def key(self) -> str:
        return f"{self.node}.{self.input}"


def load_workflow(path: str | Path) -> dict:
    """An API-format workflow from ``path`` (bare, or wrapped as ``{"prompt": ...}``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BatchError(f"{path}: cannot read the workflow ({e.strerror or e})") from e
    except ValueError as e:
        raise BatchError(f"{path}: not JSON ({e})") from e
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise BatchError(f"{path}: this is a canvas (UI) workflow; export it with 'Export (API)' and use that file")
    if not isinstance(data, dict) or not data:
        raise BatchError(f"{path}: not an API-format workflow (expected {{node id: {{class_type, inputs}}}})")
    for node_id, node in data.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise BatchError(f"{path}: node {node_id!r} has no class_type; is this an API-format workflow?")
        if not isinstance(node.setdefault("inputs", {}), dict):
            raise BatchError(f"{path}: node {node_id!r} has inputs that are not an object")
    return data


def title(workflow: dict, node_id: str) -> str:
    return str((workflow[node_id].get("_meta") or {}).get("title") or "")


def find_nodes(workflow: dict, name: str) -> list[str]:
    """Ids of the nodes that ``name`` names: its id, or its title."""
    found = [node_id for node_id in workflow if title(workflow, node_id) == name]
    if name in workflow and name not in found:
        found.insert(0, name)
    return found


def resolve(workflow: dict, spec: str) -> Target:
    """``NODE.INPUT`` -> Target. Titles may contain dots: every split is tried, exactly one must fit."""
    if "." not in spec:
        raise BatchError(f"{spec!r}: expected NODE.INPUT (a node title or id, a dot, an input name)")
    fits, near = [], []
    parts = spec.split(".")
    for i in range(1, len(parts)):
        name, input_name = ".".join(parts[:i]), ".".join(parts[i:])
        nodes = find_nodes(workflow, name)
        if len(nodes) > 1:
            raise BatchError(f"{spec!r}: {name!r} names several nodes ({', '.join(nodes)}); use the node id")
        if nodes:
            (node_id,) = nodes
            if input_name in workflow[node_id]["inputs"]:
                fits.append((node_id, input_name))
            else:
                near.append((node_id, input_name))
    if len(fits) > 1:
        raise BatchError(f"{spec!r} can be read in several ways ({', '.join('.'.join(f) for f in fits)}); use node ids")
    if not fits:
        if near:
            node_id, input_name = near[0]
            have = ", ".join(workflow[node_id]["inputs"]) or "none"
            raise BatchError(
                f"{spec!r}: {_describe(workflow, node_id)} has no input {input_name!r}; its inputs: {have}"
            )
        known = ", ".join(_describe(workflow, n) for n in workflow)
        raise BatchError(f"{spec!r}: no node with that title or id; the workflow has {known}")
    node_id, input_name = fits[0]
    value = workflow[node_id]["inputs"][input_name]
    if _is_link(value):
        raise BatchError(f"{spec!r}: that input is wired to node {value[0]}; only widget inputs can be set")
    return Target(node_id, input_name, f"{spec} (node {node_id}, {workflow[node_id]['class_type']})")


def _describe(workflow: dict, node_id: str) -> str:
    name = title(workflow, node_id)
    return f"node {node_id} ({workflow[node_id]['class_type']}{f', {name!r}' if name else ''})"


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def parse_bind(text: str) -> tuple[str, str]:
    """``NAME=NODE.INPUT`` -> (name, spec)."""
    name, sep, spec = text.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise BatchError(f"--bind {text!r}: expected NAME=NODE.INPUT, e.g. content=Content.image")
    return name.strip(), spec.strip()


def parse_set(text: str) -> tuple[str, str]:
    """``NODE.INPUT=VALUE`` -> (spec, raw value). The first ``=`` splits (values may hold more)."""
    spec, sep, raw = text.partition("=")
    if not sep or not spec.strip():
        raise BatchError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. 'AdaAttN Stylize.strength=0.8'")
    return spec.strip(), raw


def coerce(raw: str, current: Any, where: str) -> Any:
    """The value ``raw`` stands for, typed like the input's ``current`` value.

    Strings stay strings (JSON quotes are removed), so ``filename_prefix=2024`` is ``"2024"``;
    numbers and booleans are parsed and checked; for other inputs ``raw`` is read as JSON,
    falling back to the plain string.
    """
    text = raw.strip()
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise BatchError(f"--set {where}={raw}: expected true or false")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise BatchError(f"--set {where}={raw}: expected an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise BatchError(f"--set {where}={raw}: expected a number") from None
    if isinstance(current, str):
        if len(text) >= 2 and text[0] == text[-1] == '"':
            try:
                return json.loads(text)
            except ValueError:
                pass
        return raw
    try:
        return json.loads(text)
    except ValueError:
        return raw


def apply(workflow: dict, values: dict[Target, Any]) -> dict:
    """A copy of ``workflow`` with each target input set to its value."""
    out = copy.deepcopy(workflow)
    for target, value in values.items():
        out[target.node]["inputs"][target.input] = value
    return out


def canonical_hash(data: Any) -> str:
    """SHA-256 of ``data`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def graph_hash(workflow: dict, blank: list[Target]) -> str:
    """Hash of what the workflow computes: class types and inputs, titles ignored, ``blank`` inputs emptied
    (the bound ones: their values come from each job)."""
    graph = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in workflow.items()}
    graph = copy.deepcopy(graph)
    for t in blank:
        graph[t.node]["inputs"][t.input] = None
    return canonical_hash(graph)
