"""Minimal stand-ins for the ComfyUI modules the pack imports, to test nodes without ComfyUI.

They follow the documented behaviour of ComfyUI 0.33 (comfy.model_management,
comfy.model_patcher, comfy.utils.ProgressBar, folder_paths) and record calls for tests.
A real-ComfyUI test (test_comfy_server.py) runs the same nodes in a real server.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PACK = "adaattn_pack"  # the name ComfyUI would give the pack's module is its folder's; any name works


class InterruptProcessingException(BaseException):
    pass


class Host:
    """State shared by the stub modules, inspected by tests."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.loads: list = []
        self.progress: list[tuple[int, int]] = []
        self.interrupt_after: int | None = None  # raise on the n-th interrupt check
        self.checks = 0
        self.vae_dtype_calls: list = []
        self.vae_dtype = torch.bfloat16  # what vae_dtype answers for a non-CPU device


def build(models_dir: Path) -> tuple[Host, dict[str, types.ModuleType]]:
    host = Host(models_dir)
    cpu = torch.device("cpu")

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: cpu
    mm.unet_offload_device = lambda: cpu
    mm.intermediate_device = lambda: cpu
    mm.intermediate_dtype = lambda: torch.float32
    mm.get_free_memory = lambda dev=None, torch_free_too=False: 8 * 2**30
    mm.soft_empty_cache = lambda force=False: None
    mm.OOM_EXCEPTION = torch.OutOfMemoryError
    mm.is_oom = lambda e: isinstance(e, torch.OutOfMemoryError)
    mm.InterruptProcessingException = InterruptProcessingException

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):  # fmt: skip
        host.loads.append((models, memory_required, force_full_load))
        for m in models:
            m.model.to(m.load_device)

    def throw_exception_if_processing_interrupted():
        host.checks += 1
        if host.interrupt_after is not None and host.checks >= host.interrupt_after:
            raise InterruptProcessingException()

    def vae_dtype(device=None, allowed_dtypes=()):
        # ComfyUI: the first allowed dtype the device supports (fp16/bf16 checks), else float32
        host.vae_dtype_calls.append((device, list(allowed_dtypes)))
        if device is None or torch.device(device).type == "cpu":
            return torch.float32
        return host.vae_dtype if host.vae_dtype in allowed_dtypes else torch.float32

    mm.load_models_gpu = load_models_gpu
    mm.vae_dtype = vae_dtype
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

    patcher = types.ModuleType("comfy.model_patcher")

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device

    patcher.ModelPatcher = patcher.CoreModelPatcher = ModelPatcher

    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            self.current = value
            host.progress.append((value, total or self.total))

        def update(self, value):
            self.update_absolute(self.current + value)

    utils.ProgressBar = ProgressBar

    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, patcher, utils
    comfy.__path__ = []

    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.folder_names_and_paths = {}

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths[name][0])

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths[name]
        out = set()  # like ComfyUI: one entry per relative name, sorted
        for folder in paths:
            if os.path.isdir(folder):
                out.update(f for f in os.listdir(folder) if not exts or os.path.splitext(f)[1] in exts)
        return sorted(out)

    def get_full_path(name, filename):
        for folder in fp.folder_names_and_paths[name][0]:
            path = os.path.join(folder, filename)
            if os.path.isfile(path):
                return path
        return None

    fp.get_folder_paths, fp.get_filename_list, fp.get_full_path = get_folder_paths, get_filename_list, get_full_path
    fp.get_input_directory = lambda: str(models_dir.parent / "input")
    modules = {"comfy": comfy, "comfy.model_management": mm, "comfy.model_patcher": patcher, "comfy.utils": utils,
               "folder_paths": fp}  # fmt: skip
    return host, modules


def video_api(video_from_file) -> dict[str, types.ModuleType]:
    """``comfy_api.latest`` with ``InputImpl.VideoFromFile``: with it the pack registers its video node."""
    api = types.ModuleType("comfy_api")
    latest = types.ModuleType("comfy_api.latest")
    latest.InputImpl = types.SimpleNamespace(VideoFromFile=video_from_file)
    api.latest = latest
    return {"comfy_api": api, "comfy_api.latest": latest}


def import_pack():
    """Import the repository root as a package, the way ComfyUI imports a custom node folder."""
    for name in [n for n in sys.modules if n == PACK or n.startswith(PACK + ".")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module
