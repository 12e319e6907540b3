"""Everything the node pack takes from ComfyUI, in one module (tests replace it with stubs).

Device placement goes through ComfyUI's model patcher and memory manager; progress,
interrupts and out-of-memory detection through ComfyUI's own helpers.
"""

from __future__ import annotations

import os

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch

from ..adaattn_model.models_folder import search_folders

MODEL_FOLDER = "adaattn"
EXTENSIONS = {".safetensors"}


def register_model_folder() -> None:
    """Register the model folder ``adaattn``: the folders of ``models_folder.search_folders``.

    Only ``.safetensors`` files are listed. A folder of that name added by the user's
    extra_model_paths.yaml is kept and extended, not replaced.
    """
    wanted = [str(p) for p in search_folders(os.path.join(folder_paths.models_dir, MODEL_FOLDER))]
    if MODEL_FOLDER in folder_paths.folder_names_and_paths:
        paths, _ = folder_paths.folder_names_and_paths[MODEL_FOLDER]
        paths = list(paths) + [p for p in wanted if p not in paths]
    else:
        paths = wanted
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = (paths, set(EXTENSIONS))


def model_folders() -> list[str]:
    return folder_paths.get_folder_paths(MODEL_FOLDER)


def model_files() -> list[str]:
    return folder_paths.get_filename_list(MODEL_FOLDER)


def model_file_path(name: str) -> str | None:
    return folder_paths.get_full_path(MODEL_FOLDER, name)


def download_folder() -> str:
    """Where weights fetched on first use go: ComfyUI's ``models/adaattn``."""
    return os.path.join(folder_paths.models_dir, MODEL_FOLDER)


def compute_device() -> torch.device:
    return mm.get_torch_device()


def auto_dtype(device: torch.device) -> torch.dtype:
    """ComfyUI's dtype choice for a VAE-like conv net on ``device``; float32 on the CPU.

    ``vae_dtype`` with ComfyUI's default VAE working dtypes: bfloat16 where the device runs it
    well, else float32; the user's ``--fp16-vae``/``--bf16-vae``/``--fp32-vae`` flags win.
    """
    if device.type == "cpu":
        return torch.float32
    return mm.vae_dtype(device, [torch.bfloat16, torch.float32])


def wrap(module: torch.nn.Module):
    """A model patcher, so ComfyUI's memory manager places and evicts ``module``."""
    return comfy.model_patcher.CoreModelPatcher(
        module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def load(patcher, memory_required: int = 0) -> torch.device:
    """Put the patched model on its compute device (evicting others as needed)."""
    mm.load_models_gpu([patcher], memory_required=memory_required, force_full_load=True)
    return patcher.load_device


def free_memory(device: torch.device) -> int:
    return int(mm.get_free_memory(device))


def intermediate() -> tuple[torch.device, torch.dtype]:
    """Where IMAGE tensors live between nodes."""
    return mm.intermediate_device(), mm.intermediate_dtype()


def progress(total: int):
    return comfy.utils.ProgressBar(total)


def check_interrupt() -> None:
    mm.throw_exception_if_processing_interrupted()


def is_oom(error: BaseException) -> bool:
    if hasattr(mm, "is_oom"):
        return bool(mm.is_oom(error))
    return isinstance(error, mm.OOM_EXCEPTION)


def empty_cache() -> None:
    mm.soft_empty_cache()


def temp_directory() -> str:
    """ComfyUI's temp folder (emptied at start-up): where outputs that are files, like videos, go."""
    return folder_paths.get_temp_directory()


def input_directory() -> str:
    """ComfyUI's input folder (where uploads go)."""
    return folder_paths.get_input_directory()
