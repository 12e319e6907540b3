"""Run folders: the model in the family's safetensors layout and a resumable training state.

``RUN_DIR/model.safetensors`` is the latest weights (loads in ``stylize``, ``info`` and the
ComfyUI loader); ``RUN_DIR/state.pt`` holds everything to continue bit for bit: model,
optimizer, grad scaler, step, data position and generator states. Both are written
atomically; the state is only ever read with ``weights_only=True`` (tensors and plain
types, no code).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..files import atomic_output
from ..weights import save_weights

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
STATE_VERSION = 1


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a training run folder (no {CONFIG_FILE})")
    return json.loads(path.read_text())


def save_model(path: Path, model: torch.nn.Module, family: str, metadata: Mapping[str, str]) -> Path:
    tensors = {k: v.detach().float() for k, v in model.state_dict().items()}
    return save_weights(path, tensors, family, extra_metadata=dict(metadata))


def save_state(run_dir: Path, state: Mapping[str, Any]) -> Path:
    path = run_dir / STATE_FILE
    with atomic_output(path) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)
    return path


def load_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir}: no training state to resume ({STATE_FILE} is missing)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: unreadable training state ({error})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a training state of version {STATE_VERSION}")
    return state
