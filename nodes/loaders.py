"""Loading weights from the ``adaattn`` model folder."""

from __future__ import annotations

import functools
import os

import torch

from ..adaattn_model.models_folder import FAMILY_ORDER
from ..adaattn_model.pipeline import Stylizer
from ..adaattn_model.weights import ENCODER, WeightsError, detect_kind, header_shapes, load_encoder, load_model
from . import host
from .bundles import CATEGORY, MODEL_TYPE, LoadedModel

FETCH_COMMAND = "python -m adaattn_model fetch"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@functools.lru_cache(maxsize=256)
def _kind_of(path: str, mtime_ns: int, size: int) -> str | None:
    """The kind a weights file holds, from its header (cached per file version)."""
    try:
        return detect_kind(header_shapes(path), path)
    except WeightsError:
        return None


def files_by_kind() -> dict[str, list[str]]:
    """Kind -> file names in the model folder(s), recognised by their tensor names and shapes."""
    found: dict[str, list[str]] = {}
    for name in host.model_files():
        path = host.model_file_path(name)
        if path is None:
            continue
        st = os.stat(path)
        kind = _kind_of(path, st.st_mtime_ns, st.st_size)
        if kind is not None:
            found.setdefault(kind, []).append(name)
    return found


def encoder_choices() -> list[str]:
    return files_by_kind().get(ENCODER, [])


def model_choices() -> list[str]:
    found = files_by_kind()
    return [name for family in FAMILY_ORDER for name in found.get(family, [])]


def missing_weights_message(name: str, what: str) -> str:
    folders = host.model_folders()
    return (
        f"AdaAttN {what} '{name}' is not in the model folder ({', '.join(folders)}). "
        f"Put the .safetensors files there, or run: {FETCH_COMMAND} --dest \"{folders[0]}\""
    )


class AdaAttNLoader:
    """Load AdaAttN Model: the VGG encoder and a family model from ``models/adaattn``."""

    DESCRIPTION = (
        "Loads the VGG encoder and an AdaAttN model (the authors' image or video model, or lite) "
        f"from the 'adaattn' model folder. Only .safetensors files are listed. No weights yet? Run: {FETCH_COMMAND}"
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The encoder and model, for the other AdaAttN nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "encoder_name": (encoder_choices(), {"tooltip": "VGG encoder weights (vgg_normalised.safetensors)."}),
                "model_name": (
                    model_choices(),
                    {"tooltip": "Model weights: adaattn_official (the authors' image model), "
                     "adaattn_official_video (their video model) or adain_decoder (lite)."},
                ),  # fmt: skip
                "dtype": (
                    list(DTYPES),
                    {"default": "float32", "tooltip": "Weights and activations; attention statistics stay float32. "
                     "float16/bfloat16 save GPU memory at a small cost in accuracy."},
                ),  # fmt: skip
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, encoder_name, model_name, dtype):
        if encoder_name not in encoder_choices():
            return missing_weights_message(encoder_name, "encoder")
        if model_name not in model_choices():
            return missing_weights_message(model_name, "model")
        if dtype not in DTYPES:
            return f"dtype must be one of {', '.join(DTYPES)}"
        return True

    def load(self, encoder_name: str, model_name: str, dtype: str = "float32"):
        paths = {}
        for what, name in (("encoder", encoder_name), ("model", model_name)):
            path = host.model_file_path(name)
            if path is None:
                raise FileNotFoundError(missing_weights_message(name, what))
            paths[what] = path
        dt = DTYPES[dtype]
        stylizer = Stylizer(load_encoder(paths["encoder"], dtype=dt), load_model(paths["model"], dtype=dt))
        return (LoadedModel(stylizer, host.wrap(stylizer), model_name),)


NODE_CLASS_MAPPINGS = {"AdaAttNLoader": AdaAttNLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"AdaAttNLoader": "Load AdaAttN Model"}
