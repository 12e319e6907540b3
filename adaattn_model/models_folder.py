"""Where weights live, and which model a folder offers first: one rule for the CLI and the nodes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

# ``auto`` picks the first family found, in this order (the authors' image model is the most faithful).
FAMILY_ORDER = ("official-image", "lite", "official-video")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def comfyui_models_dir(root: Path = PROJECT_ROOT) -> Path | None:
    """``<ComfyUI>/models/adaattn`` when this project sits in a ComfyUI ``custom_nodes`` folder."""
    if root.parent.name == "custom_nodes" and (root.parent.parent / "models").is_dir():
        return root.parent.parent / "models" / "adaattn"
    return None


def search_folders(comfy_models: str | os.PathLike | None = None) -> list[Path]:
    """Every folder weights are looked for in, first place first.

    ``$ADAATTN_MODELS``; ComfyUI's ``models/adaattn`` (``comfy_models`` when the host
    says where it is, else found from this project's location); ``models/`` in a
    source checkout; ``~/.cache/adaattn/models`` otherwise.
    """
    found: list[Path] = []
    env = os.environ.get("ADAATTN_MODELS")
    if env:
        found.append(Path(env).expanduser())
    comfy = Path(comfy_models) if comfy_models is not None else comfyui_models_dir()
    if comfy is not None:
        found.append(comfy)
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        found.append(PROJECT_ROOT / "models")
    if not found:
        found.append(Path.home() / ".cache" / "adaattn" / "models")
    return list(dict.fromkeys(found))


def default_models_dir() -> Path:
    """Where weights go when no folder is given: the first of :func:`search_folders`."""
    return search_folders()[0]


def pick_family(available: Sequence[str] | Mapping[str, object], family: str = "auto") -> str | None:
    """The family to use from those ``available``: ``family`` itself, or for ``auto`` the first in FAMILY_ORDER."""
    order = FAMILY_ORDER if family == "auto" else (family,)
    return next((f for f in order if f in available), None)
