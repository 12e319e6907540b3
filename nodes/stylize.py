"""All-in-one stylisation of images, and of frame sequences."""

from __future__ import annotations

import torch

from ..adaattn_model.adaattn import StyleSource
from ..adaattn_model.color import COLOR_MODES, match_color, preserve_luminance
from ..adaattn_model.frames import DEFAULT_STABILIZER, FrameState, Stabilizer, stylize_frames
from ..adaattn_model.functional import batch_item
from ..adaattn_model.images import resize_max_side
from ..adaattn_model.pipeline import StylizeOptions, decode_image, encode_content, encode_style, stylize_features
from . import host
from .bundles import CATEGORY, LoadedModel
from .common import (
    ATTENTION_INPUTS,
    MODEL_INPUT,
    STRENGTH_INPUT,
    STYLE_MAX_SIDE_INPUT,
    activation_bytes,
    attention_budget,
    attention_spec,
    make_sampling,
    run_in_chunks,
)
from .progress import node_progress
from .tensors import fit_mask, image_to_rgb, rgb_to_image

COLOR_INPUT = (
    list(COLOR_MODES),
    {"default": "none", "tooltip": "Keep the content's colours: luminance transfers only the style's light and "
     "texture; match recolours the style to the content's palette first."},
)  # fmt: skip


def options_for(model: LoadedModel, device, attention, temperature, sampling, sample_seed, strength) -> StylizeOptions:
    return StylizeOptions(
        alpha=strength,
        attention=attention_spec(model.family, attention, temperature),
        sampling=make_sampling(sampling, sample_seed),
        budget_bytes=attention_budget(device),
    )


class AdaAttNStylize:
    DESCRIPTION = (
        "Stylises content images with a style image in one node (encode, AdaAttN at all of the model's layers, "
        "decode). The result has the content's size. A style batch of 1 is used for every content; a batch "
        "equal to the content's pairs up."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The stylised images.",)
    FUNCTION = "stylize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "content": ("IMAGE", {"tooltip": "Images to stylise."}),
                "style": ("IMAGE", {"tooltip": "Style image (or one per content image)."}),
                "strength": STRENGTH_INPUT,
                "style_max_side": STYLE_MAX_SIDE_INPUT,
                "preserve_color": COLOR_INPUT,
                **ATTENTION_INPUTS,
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Where to stylise (1) and where to keep the content (0)."}),
            },
        }

    def stylize(self, model: LoadedModel, content, style, strength, style_max_side, preserve_color, attention,
                temperature, sampling, sample_seed, mask=None):  # fmt: skip
        if preserve_color not in COLOR_MODES:
            raise ValueError(f"preserve_color must be one of {', '.join(COLOR_MODES)}")
        contents = image_to_rgb(content, "content")
        styles = resize_max_side(image_to_rgb(style, "style"), style_max_side)
        batch = contents.shape[0]
        if styles.shape[0] not in (1, batch):
            raise ValueError(
                f"{styles.shape[0]} style images for {batch} content images: give one style for all contents or "
                "one per content; to combine several styles use AdaAttN Blend Styles with the per-layer nodes"
            )
        region = fit_mask(mask, tuple(contents.shape[-2:]), batch)
        device = host.load(model.patcher, activation_bytes(*contents.shape[-2:]))
        where, dtype = host.intermediate()
        options = options_for(model, device, attention, temperature, sampling, sample_seed, strength)
        layers = model.family.layers
        encoder = model.stylizer.encoder
        cache: dict[int, object] = {}
        outputs = []

        def step(start: int, stop: int) -> None:
            rgb = contents[start:stop].to(device)
            key = min(start, styles.shape[0] - 1)  # a single style serves every content
            s = styles[key][None].to(device)
            if preserve_color == "match":
                encoded_style = encode_style(encoder, match_color(s, rgb), layers)
            else:
                if key not in cache:
                    cache[key] = encode_style(encoder, s, layers)
                encoded_style = cache[key]
            host.check_interrupt()  # between the stages too, so a cancel does not wait for a whole image
            encoded = encode_content(encoder, rgb, layers)
            r = batch_item(region, start).to(device) if region is not None else None
            host.check_interrupt()
            feats = stylize_features(model.model, encoded, [StyleSource(encoded_style)], options, region=r)
            host.check_interrupt()
            out = decode_image(model.model, feats, encoded).float().clamp(0, 1)
            if preserve_color == "luminance":
                out = preserve_luminance(out, rgb)
            outputs.append(rgb_to_image(out, where, dtype))

        run_in_chunks(batch, 1, step)
        return (torch.cat(outputs),)


class AdaAttNStylizeFrames:
    DESCRIPTION = (
        "Stylises a sequence of frames (an IMAGE batch, e.g. from Get Video Components) with one style. The "
        "style is encoded once, frames run in chunks with progress per frame, and the run can be cancelled. "
        "Temporal smoothing steadies areas that do not change between frames (no optical flow needed)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The stylised frames, same count and size.",)
    FUNCTION = "stylize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "frames": ("IMAGE", {"tooltip": "The frames, as an IMAGE batch, in order."}),
                "style": ("IMAGE", {"tooltip": "The style image (the first image of a batch is used)."}),
                "strength": STRENGTH_INPUT,
                "style_max_side": STYLE_MAX_SIDE_INPUT,
                **ATTENTION_INPUTS,
                "temporal_smoothing": ("FLOAT", {"default": DEFAULT_STABILIZER.temporal_smoothing, "min": 0.0,
                                       "max": 0.99, "step": 0.01, "tooltip": "How much each area keeps the "
                                       "previous frame's style statistics where the content did not change "
                                       "(0 = off). Steadies static areas; moving ones follow at once."}),  # fmt: skip
                "change_threshold": ("FLOAT", {"default": DEFAULT_STABILIZER.change_threshold, "min": 0.01,
                                     "max": 10.0, "step": 0.05, "tooltip": "How much an area may change and still "
                                     "count as unchanged for temporal smoothing (higher = smoother, but slower "
                                     "to follow changes and cuts)."}),  # fmt: skip
                "shared_normalization": ("FLOAT", {"default": DEFAULT_STABILIZER.shared_normalization, "min": 0.0,
                                         "max": 0.99, "step": 0.01, "tooltip": "Normalise each frame with content "
                                         "statistics averaged over the frames so far (0 = per frame)."}),  # fmt: skip
                "frames_per_chunk": ("INT", {"default": 4, "min": 1, "max": 256, "tooltip": "Frames processed "
                                     "together; halved automatically when the GPU runs out of memory."}),  # fmt: skip
            }
        }

    def stylize(self, model: LoadedModel, frames, style, strength, style_max_side, attention, temperature, sampling,
                sample_seed, temporal_smoothing, change_threshold, shared_normalization, frames_per_chunk):  # fmt: skip
        clip = image_to_rgb(frames, "frames")
        style_rgb = resize_max_side(image_to_rgb(style, "style")[:1], style_max_side)
        stabilizer = Stabilizer(temporal_smoothing, change_threshold, shared_normalization)
        device = host.load(model.patcher, activation_bytes(*clip.shape[-2:], batch=frames_per_chunk))
        where, dtype = host.intermediate()
        options = options_for(model, device, attention, temperature, sampling, sample_seed, strength)
        source = StyleSource(encode_style(model.stylizer.encoder, style_rgb.to(device), model.family.layers))
        host.check_interrupt()
        outputs, state = [], [FrameState()]
        progress = node_progress()  # checked between layers and attention blocks, not only between chunks

        def step(start: int, stop: int) -> None:
            trial = state[0].copy()  # an out-of-memory retry must not see a half-advanced state
            chunk = stylize_frames(model.model, model.stylizer.encoder, clip[start:stop].to(device), [source], options,
                                   stabilizer, chunk=stop - start, state=trial, progress=progress)  # fmt: skip
            outputs.extend(rgb_to_image(out, where, dtype) for out in chunk)
            state[0] = trial

        run_in_chunks(clip.shape[0], frames_per_chunk, step, progress=progress)
        return (torch.cat(outputs),)


NODE_CLASS_MAPPINGS = {"AdaAttNStylize": AdaAttNStylize, "AdaAttNStylizeFrames": AdaAttNStylizeFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"AdaAttNStylize": "AdaAttN Stylize", "AdaAttNStylizeFrames": "AdaAttN Stylize Frames"}
