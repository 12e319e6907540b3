"""The composable graph: Encode -> AdaAttN per layer (chainable) -> Decode."""

from __future__ import annotations

import torch

from ..adaattn_model.adaattn import StyleSource, adaattn_layer
from ..adaattn_model.features import ATTENTION_LAYERS, EncodedImage
from ..adaattn_model.functional import batch_item
from ..adaattn_model.images import resize_max_side
from ..adaattn_model.pipeline import decode_image, encode_content, encode_style
from . import host
from .bundles import CATEGORY, FEATURES_TYPE, BlendPart, Features, LoadedModel, StyleBlend
from .common import (
    ATTENTION_INPUTS,
    MODEL_INPUT,
    STRENGTH_INPUT,
    activation_bytes,
    attention_budget,
    attention_spec,
    make_sampling,
    run_in_chunks,
)
from .tensors import fit_mask, image_to_rgb, rgb_to_image

ROLES = ("content", "style")


def check_content(features, model: LoadedModel, what: str = "content") -> Features:
    if not isinstance(features, Features) or features.role != "content":
        raise ValueError(f"{what} must be features from AdaAttN Encode with use_as = content")
    missing = [layer for layer in model.family.layers if layer not in features.encoded.features]
    if missing:
        raise ValueError(
            f"the {what} features lack {', '.join(missing)}: encode with the same model ({model.family.name})"
        )
    return features


def style_parts(style, content_batch: int) -> tuple[list[BlendPart], str]:
    """The parts of a style input (one style, or a blend) and the blend mode."""
    if isinstance(style, StyleBlend):
        parts, mode = list(style.parts), style.mode
    elif isinstance(style, Features):
        parts, mode = [BlendPart(style, 1.0, None)], "mix"
    else:
        raise ValueError("style must be features from AdaAttN Encode or AdaAttN Blend Styles")
    for k, part in enumerate(parts):
        if part.style.batch not in (1, content_batch):
            raise ValueError(
                f"style {k + 1} has {part.style.batch} images for {content_batch} contents: give one style for all "
                "contents or one per content; to combine several styles use AdaAttN Blend Styles"
            )
    return parts, mode


def select(t: torch.Tensor | None, index: int) -> torch.Tensor | None:
    """Element ``index`` of an optional batch (a batch of 1 serves every index)."""
    return None if t is None else batch_item(t, index)


class AdaAttNEncode:
    DESCRIPTION = (
        "Encodes images with the VGG encoder into AdaAttN features (relu features and attention keys at the "
        "model's layers). Encode the content with use_as = content and each style with use_as = style."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (FEATURES_TYPE,)
    RETURN_NAMES = ("features",)
    OUTPUT_TOOLTIPS = ("Encoded images, for AdaAttN Attention, Blend Styles and Decode.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "image": ("IMAGE", {"tooltip": "Images to encode (a batch is encoded image by image)."}),
                "use_as": (list(ROLES), {"default": "content", "tooltip": "content: padded to a size the decoder "
                           "accepts and cropped back after decoding. style: used as is."}),  # fmt: skip
                "max_side": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 16, "tooltip": "Shrink so the "
                             "longer side is at most this (0 = keep). For styles it sets the texture scale; 512 is "
                             "what the authors' models saw."}),  # fmt: skip
            }
        }

    def encode(self, model: LoadedModel, image, use_as: str, max_side: int):
        if use_as not in ROLES:
            raise ValueError(f"use_as must be content or style, not {use_as!r}")
        rgb = resize_max_side(image_to_rgb(image), max_side)
        device = host.load(model.patcher, activation_bytes(*rgb.shape[-2:]))
        where, _ = host.intermediate()
        encode_fn = encode_content if use_as == "content" else encode_style
        parts: list[EncodedImage] = []

        def step(start: int, stop: int) -> None:
            encoded = encode_fn(model.stylizer.encoder, rgb[start:stop].to(device), model.family.layers)
            parts.append(encoded.to(where))

        run_in_chunks(rgb.shape[0], 1, step)
        return (Features(EncodedImage.cat(parts), use_as),)


class AdaAttNAttention:
    DESCRIPTION = (
        "AdaAttN at one layer: every content position takes the attention-weighted mean and spread of the style "
        "features. Chain several (relu3_1, relu4_1, relu5_1) to stylise any subset of the model's layers; layers "
        "left out keep the content. Masks limit where (content_mask) and from where (style_mask) style is taken."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (FEATURES_TYPE,)
    RETURN_NAMES = ("features",)
    OUTPUT_TOOLTIPS = ("The content features with this layer stylised; chain into another layer or Decode.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "content": (FEATURES_TYPE, {"tooltip": "Content features (Encode with use_as = content, or the "
                            "output of another AdaAttN Attention)."}),  # fmt: skip
                "style": (FEATURES_TYPE, {"tooltip": "Style features (Encode with use_as = style), or a blend "
                          "of styles from AdaAttN Blend Styles."}),  # fmt: skip
                "layer": (list(ATTENTION_LAYERS), {"default": "relu4_1", "tooltip": "VGG layer to stylise. The "
                          "image model uses all three; the video model relu3_1; lite relu4_1."}),  # fmt: skip
                **ATTENTION_INPUTS,
                "strength": STRENGTH_INPUT,
            },
            "optional": {
                "content_mask": ("MASK", {"tooltip": "Where to stylise (1) and where to keep the incoming "
                                 "features (0), over the content image."}),  # fmt: skip
                "style_mask": ("MASK", {"tooltip": "Which part of the style image to take style from (1), "
                               "over the style image. Single styles only."}),  # fmt: skip
            },
        }

    def apply(self, model: LoadedModel, content, style, layer, attention, temperature, sampling, sample_seed,
              strength, content_mask=None, style_mask=None):  # fmt: skip
        family = model.family
        if layer not in family.layers:
            raise ValueError(
                f"the {family.name} model has no AdaAttN at {layer}; it uses {', '.join(family.layers)}"
            )
        content = check_content(content, model)
        batch = content.batch
        parts, mode = style_parts(style, batch)
        if style_mask is not None and len(parts) > 1:
            raise ValueError("style_mask works with a single style, not a blend")
        for part in parts:
            if layer not in part.style.encoded.features:
                raise ValueError(f"the style features lack {layer}: encode the style with the same model")
        spec = attention_spec(family, attention, temperature)
        region = fit_mask(content_mask, content.encoded.size, batch, "content_mask")
        first = parts[0].style
        mask = fit_mask(style_mask, first.encoded.size, first.batch, "style_mask")
        regions = [fit_mask(p.region, content.encoded.size, batch, f"region mask of style {k + 1}")
                   for k, p in enumerate(parts)]  # fmt: skip
        device = host.load(model.patcher, activation_bytes(*content.encoded.size))
        where, _ = host.intermediate()
        shared = {k: p.style.encoded.to(device) for k, p in enumerate(parts) if p.style.batch == 1}
        budget = attention_budget(device)
        rule = make_sampling(sampling, sample_seed)
        outputs = []

        def step(start: int, stop: int) -> None:
            sources = [
                StyleSource(
                    shared[k] if k in shared else p.style.encoded.take(start).to(device),
                    weight=p.weight,
                    region=select(regions[k], start),
                    mask=select(mask, start if p.style.batch > 1 else 0) if k == 0 else None,
                )
                for k, p in enumerate(parts)
            ]
            out = adaattn_layer(
                layer,
                content.encoded.take(start).to(device),
                sources,
                projections=model.model.projections(layer),
                spec=spec,
                sampling=rule,
                max_sample=family.max_sample[layer],
                blend=mode,
                strength=strength,
                region=select(region, start),
                incoming=content.layer(layer)[start:stop].to(device),
                budget_bytes=budget,
            )
            outputs.append(out.to(where))

        run_in_chunks(batch, 1, step)
        return (content.with_layer(layer, torch.cat(outputs)),)


class AdaAttNDecode:
    DESCRIPTION = "Decodes AdaAttN features into images at the content's original size."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The stylised images, the size of the content images.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "features": (FEATURES_TYPE, {"tooltip": "Content features after one or more AdaAttN Attention "
                             "nodes (layers not stylised keep the content)."}),  # fmt: skip
            }
        }

    def decode(self, model: LoadedModel, features):
        features = check_content(features, model, "features")
        device = host.load(model.patcher, activation_bytes(*features.encoded.size))
        where, dtype = host.intermediate()
        images = []

        def step(start: int, stop: int) -> None:
            layers = {layer: features.layer(layer)[start:stop].to(device) for layer in model.family.layers}
            rgb = decode_image(model.model, layers, features.encoded.take(slice(start, stop)))
            images.append(rgb_to_image(rgb, where, dtype))

        run_in_chunks(features.batch, 1, step)
        return (torch.cat(images),)


NODE_CLASS_MAPPINGS = {"AdaAttNEncode": AdaAttNEncode, "AdaAttNAttention": AdaAttNAttention, "AdaAttNDecode": AdaAttNDecode}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AdaAttNEncode": "AdaAttN Encode",
    "AdaAttNAttention": "AdaAttN Attention (one layer)",
    "AdaAttNDecode": "AdaAttN Decode",
}
