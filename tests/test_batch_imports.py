"""The batch client's modules import one another in one direction only, and each imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "adaattn_batch"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def imports_of(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in it (type-checking-only imports included)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("adaattn_batch."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("adaattn_batch."))
    return found & set(MODULES)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_batch_client():
    graph = {module: imports_of(module) for module in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # The shared records sit below the threads that use them.
    assert not graph["records"] & {"attempt", "servers", "scheduler", "resume", "cli"}
    assert not graph["manifest"] & {"attempt", "servers", "scheduler", "resume", "records", "cli"}


def test_only_the_manifest_makes_or_changes_job_records():
    for module in MODULES:
        if module == "manifest":
            continue
        tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                maker = (
                    name == "JobRecord"
                    or (name == "replace" and isinstance(func, ast.Name))
                    or (name == "replace" and getattr(func.value, "id", None) == "dataclasses")
                )
                assert not maker, f"{module}.py line {node.lineno} builds a job record"


@pytest.mark.parametrize("module", [m for m in MODULES if m != "__main__"])  # __main__ runs the command
def test_each_module_imports_in_a_fresh_interpreter(module):
    result = subprocess.run([sys.executable, "-c", f"import adaattn_batch.{module}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
