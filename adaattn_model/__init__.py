"""AdaAttN style transfer in plain PyTorch: the authors' image and video models and a
training-free ``lite`` model, memory-bounded attention, safetensors weights.

Quick use::

    from adaattn_model import load_encoder, load_model, stylize
    encoder = load_encoder("models/vgg_normalised.safetensors")
    model = load_model("models/adain_decoder.safetensors")
    out = stylize(model, encoder, content, style)  # [N,3,H,W] in, same size out

Names are imported on first use, so ``import adaattn_model`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AttentionSpec": "attention",
    "Sampling": "sampling",
    "StyleSource": "adaattn",
    "adaattn_layer": "adaattn",
    "attention_statistics": "adaattn",
    "apply_statistics": "adaattn",
    "Stabilizer": "frames",
    "stylize_frames": "frames",
    "EncodedImage": "features",
    "encode": "features",
    "VGGEncoder": "vgg",
    "AdaAttNModel": "model",
    "FAMILIES": "model",
    "StylizeOptions": "pipeline",
    "Style": "pipeline",
    "Stylizer": "pipeline",
    "stylize": "pipeline",
    "EncodingCache": "encoding_cache",
    "Progress": "progress",
    "resolve_attention": "attention",
    "encode_content": "pipeline",
    "encode_style": "pipeline",
    "stylize_features": "pipeline",
    "decode_image": "pipeline",
    "restore_detail": "detail",
    "load_encoder": "weights",
    "load_model": "weights",
    "WeightsError": "weights",
    "convert": "tools.convert",
    "fetch": "tools.fetch",
    "default_models_dir": "models_folder",
    "load_image": "images",
    "save_image": "images",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
