"""All-in-one stylisation of images, and of frame sequences."""

from __future__ import annotations

import torch

from ..adaattn_model.color import COLOR_MODES
from ..adaattn_model.frames import DEFAULT_STABILIZER, FrameState, Stabilizer, frame_units, stylize_frames
from ..adaattn_model.pipeline import StylizeOptions, style_sources
from . import host
from .bundles import CATEGORY, LoadedModel
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
    make_sampling,
    model_default,
    run_in_chunks,
)
from .progress import node_progress
from .tensors import fit_mask, image_to_rgb, rgb_to_image

# The frame path's stabilisers, as the Stylize Frames and Stylize Video nodes both show them.
STABILIZER_INPUTS = {
    "temporal_smoothing": ("FLOAT", {"default": DEFAULT_STABILIZER.temporal_smoothing, "min": 0.0,
                           "max": 0.99, "step": 0.01, "tooltip": "How much each area keeps the "
                           "previous frame's style statistics where the content did not change "
                           "(0 = off). Steadies static areas; moving ones follow at once."}),  # fmt: skip
    "change_threshold": ("FLOAT", {"default": DEFAULT_STABILIZER.change_threshold, "min": 0.01,
                         "max": 10.0, "step": 0.05, "advanced": True, "tooltip": "How much an area may "
                         "change and still count as unchanged for temporal smoothing (higher = smoother, "
                         "but slower to follow changes and cuts)."}),  # fmt: skip
    "shared_normalization": ("FLOAT", {"default": DEFAULT_STABILIZER.shared_normalization, "min": 0.0,
                             "max": 0.99, "step": 0.01, "advanced": True, "tooltip": "Normalise each "
                             "frame with content statistics averaged over the frames so far (0 = per "
                             "frame)."}),  # fmt: skip
}
CUT_INPUT = ("FLOAT", {"default": DEFAULT_STABILIZER.cut_threshold, "min": 0.0, "max": 2.0, "step": 0.05,
                       "advanced": True, "tooltip": "Scene cuts reset the stabilisers where the content changes at "
                       "least this much (mean squared change of the normalised VGG features: ~0.05 between frames "
                       "of one shot, ~2 between unrelated shots). 0 = off."})  # fmt: skip

COLOR_INPUT = (
    list(COLOR_MODES),
    {"default": "none", "tooltip": "Keep the content's colours: luminance transfers only the style's light and "
     "texture; match recolours the style to the content's palette first."},
)  # fmt: skip


TILE_SIZE_INPUT = (
    "INT",
    {"default": 0, "min": 0, "max": 8192, "step": 16, "advanced": True,
     "tooltip": "Run the encoder, AdaAttN and the decoder in tiles of this many pixels: the same picture in "
     "less memory, for very large images. 0 = tile only when the image would not fit in memory."},
)  # fmt: skip


def options_for(device, attention, temperature, sampling, sample_seed, strength, style_max_side=0, color="none",
                tile_size=0, global_share=MODEL_DEFAULT, detail=MODEL_DEFAULT) -> StylizeOptions:  # fmt: skip
    """The widgets' values as the core's options (the attention resolved by the engine's one rule).
    ``tile_size`` 0 tiles only when the image needs more than half of the free GPU memory;
    ``global_share`` and ``detail`` -1 take the model's own."""
    limit = host.free_memory(device) // 2 if device.type == "cuda" else None
    return StylizeOptions(
        tile_size=tile_size or None,
        memory_limit_bytes=limit,
        alpha=strength,
        attention=attention,
        temperature=temperature,
        sampling=make_sampling(sampling, sample_seed),
        budget_bytes=attention_budget(device),
        color=color,
        style_max_side=style_max_side,
        global_share=model_default(global_share),
        detail=model_default(detail),
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
                "tile_size": TILE_SIZE_INPUT,
                "global_share": GLOBAL_SHARE_INPUT,
                "detail": DETAIL_INPUT,
            },
        }

    def stylize(self, model: LoadedModel, content, style, strength, style_max_side, preserve_color, attention,
                temperature, sampling, sample_seed, mask=None, tile_size=0, global_share=MODEL_DEFAULT,
                detail=MODEL_DEFAULT):  # fmt: skip
        if preserve_color not in COLOR_MODES:
            raise ValueError(f"preserve_color must be one of {', '.join(COLOR_MODES)}")
        contents = image_to_rgb(content, "content")
        styles = image_to_rgb(style, "style")
        batch = contents.shape[0]
        if styles.shape[0] not in (1, batch):
            raise ValueError(
                f"{styles.shape[0]} style images for {batch} content images: give one style for all contents or "
                "one per content; to combine several styles use AdaAttN Blend Styles with the per-layer nodes"
            )
        region = fit_mask(mask, tuple(contents.shape[-2:]), batch)
        device = host.load(model.patcher, activation_bytes(*contents.shape[-2:]))
        where, dtype = host.intermediate()
        options = options_for(device, attention, temperature, sampling, sample_seed, strength, style_max_side,
                              preserve_color, tile_size, global_share, detail)  # fmt: skip
        # The model's own cache: a re-run with other sliders (strength, attention, mask...) skips the encoder.
        out = model.stylizer.stylize(contents, styles, mask=region, options=options, progress=node_progress(),
                                     output_device=where)  # fmt: skip
        return (rgb_to_image(out, where, dtype),)


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
                **STABILIZER_INPUTS,
                "frames_per_chunk": ("INT", {"default": 4, "min": 1, "max": 256, "advanced": True, "tooltip": "Frames "
                                     "processed together; halved automatically when the GPU runs out of "
                                     "memory."}),  # fmt: skip
            },
            "optional": {
                "scene_cut_threshold": CUT_INPUT,
                "global_share": GLOBAL_SHARE_INPUT,
                "detail": DETAIL_INPUT,
            },
        }

    def stylize(self, model: LoadedModel, frames, style, strength, style_max_side, attention, temperature, sampling,
                sample_seed, temporal_smoothing, change_threshold, shared_normalization, frames_per_chunk,
                scene_cut_threshold=DEFAULT_STABILIZER.cut_threshold, global_share=MODEL_DEFAULT,
                detail=MODEL_DEFAULT):  # fmt: skip
        clip = image_to_rgb(frames, "frames")
        style_rgb = image_to_rgb(style, "style")[:1]
        stabilizer = Stabilizer(temporal_smoothing, change_threshold, shared_normalization, scene_cut_threshold)
        device = host.load(model.patcher, activation_bytes(*clip.shape[-2:], batch=frames_per_chunk))
        where, dtype = host.intermediate()
        options = options_for(device, attention, temperature, sampling, sample_seed, strength, style_max_side,
                              global_share=global_share, detail=detail)  # fmt: skip
        stylizer = model.stylizer
        sources = style_sources(stylizer.model, stylizer.encoder, style_rgb, options, cache=stylizer.cache)
        host.check_interrupt()
        outputs, state = [], [FrameState()]
        progress = node_progress()  # checked between layers and attention blocks, not only between chunks
        progress.reserve(frame_units(stylizer.model, stylizer.encoder, clip.shape, frames_per_chunk, sources, options))

        def step(start: int, stop: int) -> None:
            trial = state[0].copy()  # an out-of-memory retry must not see a half-advanced state
            chunk = stylize_frames(model.model, model.stylizer.encoder, clip[start:stop].to(device), sources, options,
                                   stabilizer, chunk=stop - start, state=trial, progress=progress)  # fmt: skip
            outputs.extend(rgb_to_image(out, where, dtype) for out in chunk)
            state[0] = trial

        run_in_chunks(clip.shape[0], frames_per_chunk, step, progress=progress)
        return (torch.cat(outputs),)

