"""Loading weights from the ``adaattn`` model folder."""

from __future__ import annotations

import functools
import logging
import os

import torch

from ..adaattn_model.models_folder import FAMILY_ORDER
from ..adaattn_model.pipeline import Stylizer
from ..adaattn_model.progress import Progress
from ..adaattn_model.tools.convert import OUTPUTS
from ..adaattn_model.tools.fetch import FetchError, ensure_default_weights, fetch_disabled
from ..adaattn_model.weights import ENCODER, WeightsError, detect_kind, header_shapes, load_encoder, load_model
from . import host
from .bundles import CATEGORY, MODEL_TYPE, LoadedModel

log = logging.getLogger(__name__)

FETCH_COMMAND = "python -m adaattn_model fetch"
# auto: ComfyUI's own choice for the compute device (see host.auto_dtype), float32 on the CPU
DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The files the first-use fetch provides; listed before they exist, with this mark while missing.
DEFAULT_ENCODER = OUTPUTS[ENCODER][0]
DEFAULT_MODEL = OUTPUTS["lite"][0]
ON_FIRST_USE = " (downloads on first use)"


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


def plain_name(name: str) -> str:
    """A listed name without the first-use mark: the file name (saved workflows use it)."""
    return name.removesuffix(ON_FIRST_USE)


def downloadable(name: str) -> bool:
    """True for a default file that is missing and would be fetched on first use."""
    name = plain_name(name)
    return name in (DEFAULT_ENCODER, DEFAULT_MODEL) and not fetch_disabled() and host.model_file_path(name) is None


def encoder_choices() -> list[str]:
    names = files_by_kind().get(ENCODER, [])
    if DEFAULT_ENCODER not in names and downloadable(DEFAULT_ENCODER):
        names = [*names, DEFAULT_ENCODER + ON_FIRST_USE]
    return names


def model_choices() -> list[str]:
    found = files_by_kind()
    names = []
    for family in FAMILY_ORDER:
        names += found.get(family, [])
        if family == "lite" and DEFAULT_MODEL not in names and downloadable(DEFAULT_MODEL):
            names.append(DEFAULT_MODEL + ON_FIRST_USE)
    return names


def fetch_default_weights() -> None:
    """Download the lite weights into ComfyUI's models/adaattn, with a progress bar; one clear error if it fails."""
    folder = host.download_folder()
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = host.progress(total)
        bar.update_absolute(done, total)

    try:
        ensure_default_weights(folder, log=log.info, progress=Progress(report, host.check_interrupt))
    except FetchError as error:
        raise RuntimeError(f"AdaAttN: could not download the default weights into {folder}: {error}") from None


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
        "from the 'adaattn' model folder. Only .safetensors files are listed. Without weights, the lite model "
        "(VGG encoder + AdaIN decoder, 88 MB, checksum-pinned) downloads into models/adaattn on first use."
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
                "encoder_name": (
                    encoder_choices(),
                    {"tooltip": "VGG encoder weights (vgg_normalised.safetensors; downloads on first use)."},
                ),
                "model_name": (
                    model_choices(),
                    {"tooltip": "Model weights: adaattn_official (the authors' image model), "
                     "adaattn_official_video (their video model) or adain_decoder (lite; downloads on first use)."},
                ),  # fmt: skip
                "dtype": (
                    list(DTYPES),
                    {"default": "auto", "tooltip": "Weights and activations; attention statistics stay float32. "
                     "auto: ComfyUI's choice for a VAE on this device (bfloat16 where fast, else float32; float32 "
                     "on the CPU). float16/bfloat16 save GPU memory at a small cost in accuracy."},
                ),  # fmt: skip
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, encoder_name, model_name, dtype):
        encoders, models = encoder_choices(), model_choices()
        if encoder_name not in encoders and plain_name(encoder_name) not in encoders and not downloadable(encoder_name):
            return missing_weights_message(encoder_name, "encoder")
        if model_name not in models and plain_name(model_name) not in models and not downloadable(model_name):
            return missing_weights_message(model_name, "model")
        if dtype not in DTYPES:
            return f"dtype must be one of {', '.join(DTYPES)}"
        return True

    def load(self, encoder_name: str, model_name: str, dtype: str = "auto"):
        encoder_name, model_name = plain_name(encoder_name), plain_name(model_name)
        if downloadable(encoder_name) or downloadable(model_name):
            fetch_default_weights()
        paths = {}
        for what, name in (("encoder", encoder_name), ("model", model_name)):
            path = host.model_file_path(name)
            if path is None:
                raise FileNotFoundError(missing_weights_message(name, what))
            paths[what] = path
        dt = DTYPES[dtype] or host.auto_dtype(host.compute_device())
        stylizer = Stylizer(load_encoder(paths["encoder"], dtype=dt), load_model(paths["model"], dtype=dt))
        return (LoadedModel(stylizer, host.wrap(stylizer), model_name),)

