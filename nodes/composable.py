"""The composable graph: Encode Content / Encode Style -> AdaAttN per layer (chainable) -> Decode."""

from __future__ import annotations

import torch

from ..adaattn_model.adaattn import StyleSource, adaattn_layer
from ..adaattn_model.detail import restore_detail_
from ..adaattn_model.features import ATTENTION_LAYERS, EncodedImage
from ..adaattn_model.functional import batch_item
from ..adaattn_model.images import resize_max_side
from ..adaattn_model.pipeline import decode_image, encode_content, encode_style
from . import host
from .bundles import CATEGORY, CONTENT_TYPE, EITHER_TYPE, STYLE_TYPE, BlendPart, Features, LoadedModel, StyleBlend
from .common import (
    ATTENTION_INPUTS,
    DETAIL_INPUT,
    GLOBAL_SHARE_INPUT,
    MODEL_DEFAULT,
    MODEL_INPUT,
    STRENGTH_INPUT,
    STYLE_MAX_SIDE_INPUT,
    activation_bytes,
    attention_budget,
    attention_spec,
    make_sampling,
    model_default,
    run_in_chunks,
)
from .tensors import fit_mask, image_to_rgb, rgb_to_image

ROLES = ("content", "style")


def check_content(features, model: LoadedModel, what: str = "content") -> Features:
    if isinstance(features, StyleBlend) or (isinstance(features, Features) and features.role == "style"):
        raise ValueError(f"{what} got style features: connect AdaAttN Encode Content (or an AdaAttN Attention) here")
    if not isinstance(features, Features) or features.role != "content":
        raise ValueError(f"{what} must be content features from AdaAttN Encode Content or AdaAttN Attention")
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
    elif isinstance(style, Features) and style.role == "content":
        raise ValueError("style got content features: connect AdaAttN Encode Style or AdaAttN Blend Styles here")
    elif isinstance(style, Features):
        parts, mode = [BlendPart(style, 1.0, None)], "mix"
    else:
        raise ValueError("style must be style features from AdaAttN Encode Style or AdaAttN Blend Styles")
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


def encode_images(model: LoadedModel, image, role: str, max_side: int) -> Features:
    """Encode an IMAGE batch image by image, as content (padded for decoding) or style (as is)."""
    if role not in ROLES:
        raise ValueError(f"use_as must be content or style, not {role!r}")
    rgb = resize_max_side(image_to_rgb(image), max_side)
    device = host.load(model.patcher, activation_bytes(*rgb.shape[-2:]))
    where, _ = host.intermediate()
    encode_fn = encode_content if role == "content" else encode_style
    parts: list[EncodedImage] = []

    def step(start: int, stop: int) -> None:
        encoded = encode_fn(model.stylizer.encoder, rgb[start:stop].to(device), model.family.layers)
        parts.append(encoded.to(where))

    run_in_chunks(rgb.shape[0], 1, step)
    return Features(EncodedImage.cat(parts), role, image=rgb.to(where) if role == "content" else None)


IMAGE_TO_ENCODE = ("IMAGE", {"tooltip": "Images to encode (a batch is encoded image by image)."})


class AdaAttNEncodeContent:
    DESCRIPTION = (
        "Encodes content images with the VGG encoder into AdaAttN content features (relu features and attention "
        "queries at the model's layers), padded to a size the decoder accepts and cropped back after decoding."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONTENT_TYPE,)
    RETURN_NAMES = ("content",)
    OUTPUT_TOOLTIPS = ("Content features, for the content input of AdaAttN Attention, or AdaAttN Decode.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "image": IMAGE_TO_ENCODE,
                "max_side": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 16, "advanced": True, "tooltip":
                             "Shrink so the longer side is at most this (0 = keep the content's size)."}),  # fmt: skip
            }
        }

    def encode(self, model: LoadedModel, image, max_side: int):
        return (encode_images(model, image, "content", max_side),)


class AdaAttNEncodeStyle:
    DESCRIPTION = (
        "Encodes style images with the VGG encoder into AdaAttN style features (relu features and attention keys "
        "at the model's layers), for AdaAttN Attention or AdaAttN Blend Styles."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (STYLE_TYPE,)
    RETURN_NAMES = ("style",)
    OUTPUT_TOOLTIPS = ("Style features, for the style input of AdaAttN Attention or a style of Blend Styles.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "image": IMAGE_TO_ENCODE,
                "max_side": STYLE_MAX_SIDE_INPUT,
            }
        }

    def encode(self, model: LoadedModel, image, max_side: int):
        return (encode_images(model, image, "style", max_side),)


class AdaAttNEncode:
    """The former two-way Encode node, kept so that workflows saved with it still load and run."""

    DESCRIPTION = (
        "Deprecated: use AdaAttN Encode Content or AdaAttN Encode Style, whose typed outputs the canvas keeps "
        "apart. Encodes images as content or style, chosen by use_as."
    )
    CATEGORY = CATEGORY
    DEPRECATED = True
    RETURN_TYPES = (EITHER_TYPE,)
    RETURN_NAMES = ("features",)
    OUTPUT_TOOLTIPS = ("Content or style features, as use_as says.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "image": IMAGE_TO_ENCODE,
                "use_as": (list(ROLES), {"default": "content", "tooltip": "content: padded to a size the decoder "
                           "accepts and cropped back after decoding. style: used as is."}),  # fmt: skip
                "max_side": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 16, "tooltip": "Shrink so the "
                             "longer side is at most this (0 = keep)."}),  # fmt: skip
            }
        }

    def encode(self, model: LoadedModel, image, use_as: str, max_side: int):
        return (encode_images(model, image, use_as, max_side),)


class AdaAttNAttention:
    DESCRIPTION = (
        "AdaAttN at one layer: every content position takes the attention-weighted mean and spread of the style "
        "features. Chain several (relu3_1, relu4_1, relu5_1) to stylise any subset of the model's layers; layers "
        "left out keep the content. Masks limit where (content_mask) and from where (style_mask) style is taken."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (CONTENT_TYPE,)
    RETURN_NAMES = ("content",)
    OUTPUT_TOOLTIPS = ("The content features with this layer stylised; chain into another layer or Decode.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "content": (CONTENT_TYPE, {"tooltip": "Content features from AdaAttN Encode Content, or the output "
                            "of another AdaAttN Attention."}),  # fmt: skip
                "style": (STYLE_TYPE, {"tooltip": "Style features from AdaAttN Encode Style, or a blend of styles "
                          "from AdaAttN Blend Styles."}),  # fmt: skip
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
                "global_share": GLOBAL_SHARE_INPUT,
            },
        }

    def apply(self, model: LoadedModel, content, style, layer, attention, temperature, sampling, sample_seed,
              strength, content_mask=None, style_mask=None, global_share=MODEL_DEFAULT):  # fmt: skip
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
        spec = attention_spec(family, attention, temperature, global_share)
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
                "features": (CONTENT_TYPE, {"tooltip": "Content features after one or more AdaAttN Attention "
                             "nodes (layers not stylised keep the content)."}),  # fmt: skip
            },
            "optional": {"detail": DETAIL_INPUT},
        }

    def decode(self, model: LoadedModel, features, detail=MODEL_DEFAULT):
        features = check_content(features, model, "features")
        chosen = model_default(detail)
        amount = model.family.detail if chosen is None else chosen
        if amount > 1:
            raise ValueError(f"detail must be in [0, 1] (or -1 for the model's own), got {detail}")
        device = host.load(model.patcher, activation_bytes(*features.encoded.size))
        where, dtype = host.intermediate()
        images = []

        def step(start: int, stop: int) -> None:
            layers = {layer: features.layer(layer)[start:stop].to(device) for layer in model.family.layers}
            rgb = decode_image(model.model, layers, features.encoded.take(slice(start, stop)))
            if amount and features.image is not None:  # the content's own detail, as the Stylize node does
                rgb = restore_detail_(rgb.float(), features.image[start:stop].to(rgb.device), amount)  # in place
            images.append(rgb_to_image(rgb, where, dtype))

        run_in_chunks(features.batch, 1, step)
        return (torch.cat(images),)
