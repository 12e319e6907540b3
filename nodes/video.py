"""Stylising ComfyUI's VIDEO into a VIDEO, streamed: frames are decoded, stylised and encoded as they go.

Registered only where ComfyUI has its video API (``comfy_api``, which brings PyAV); the rest of
the pack imports and works without it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from ..adaattn_model.frames import Stabilizer
from ..adaattn_model.pipeline import style_sources
from ..adaattn_model.video_io import VideoReader, Window
from ..adaattn_model.video_stream import stylize_video
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
)
from .progress import node_progress
from .stylize import CUT_INPUT, STABILIZER_INPUTS, options_for
from .tensors import image_to_rgb

try:
    from comfy_api.latest import InputImpl
except ImportError:  # an older ComfyUI without VIDEO, or no ComfyUI
    InputImpl = None



def video_source(video) -> tuple[object, Window]:
    """Where to decode ``video`` from (its file, or ComfyUI's encoding of its frames) and its trim window."""
    source = video.get_stream_source()
    start, duration = video.get_active_trim_window() if hasattr(video, "get_active_trim_window") else (0.0, 0.0)
    return source, Window(float(start), float(duration))


class AdaAttNStylizeVideo:
    DESCRIPTION = (
        "Stylises a VIDEO (from Load Video) with one style, streamed: frames are decoded, stylised in chunks "
        "and encoded as they go, so memory does not grow with the video's length. Frame rate, time stamps "
        "and the audio track are kept. Same stabilisers as AdaAttN Stylize Frames, and scene cuts reset them."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The stylised video (an H.264 MP4 in ComfyUI's temp folder), with the input's audio.",)
    FUNCTION = "stylize"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "video": ("VIDEO", {"tooltip": "The video to stylise (a file from Load Video, or Create Video)."}),
                "style": ("IMAGE", {"tooltip": "The style image (the first image of a batch is used)."}),
                "strength": STRENGTH_INPUT,
                "style_max_side": STYLE_MAX_SIDE_INPUT,
                **ATTENTION_INPUTS,
                **STABILIZER_INPUTS,
                "scene_cut_threshold": CUT_INPUT,
                "frames_per_chunk": (
                    "INT",
                    {"default": 4, "min": 1, "max": 256, "advanced": True, "tooltip": "Frames stylised together."},
                ),
                "max_side": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 8192,
                        "step": 16,
                        "tooltip": "Shrink frames so the longer side is at most this (0 = keep the size).",
                    },
                ),
            },
            "optional": {"global_share": GLOBAL_SHARE_INPUT, "detail": DETAIL_INPUT},
        }

    def stylize(self, model: LoadedModel, video, style, strength, style_max_side, attention, temperature, sampling,
                sample_seed, temporal_smoothing, change_threshold, shared_normalization, scene_cut_threshold,
                frames_per_chunk, max_side, global_share=MODEL_DEFAULT, detail=MODEL_DEFAULT):  # fmt: skip
        if InputImpl is None:
            raise RuntimeError("AdaAttN Stylize Video needs ComfyUI's video API (comfy_api); update ComfyUI")
        stabilizer = Stabilizer(temporal_smoothing, change_threshold, shared_normalization, scene_cut_threshold)
        source, window = video_source(video)
        with VideoReader(source, window) as reader:  # a bad video fails here, before any work
            info = reader.info
        scale = min(1.0, max_side / max(info.width, info.height)) if max_side else 1.0
        height, width = round(info.height * scale), round(info.width * scale)
        device = host.load(model.patcher, activation_bytes(height, width, batch=frames_per_chunk))
        options = options_for(device, attention, temperature, sampling, sample_seed, strength, style_max_side,
                              global_share=global_share, detail=detail)  # fmt: skip
        stylizer = model.stylizer  # the style through the core, from the loaded model's cache
        sources = style_sources(stylizer.model, stylizer.encoder, image_to_rgb(style, "style")[:1], options,
                                cache=stylizer.cache)  # fmt: skip
        progress = node_progress()
        output = Path(host.temp_directory()) / f"adaattn_video_{uuid.uuid4().hex[:12]}.mp4"
        stylize_video(model.model, model.stylizer.encoder, source, output, sources, options, stabilizer,
                      chunk=frames_per_chunk, max_side=max_side, window=window, progress=progress)  # fmt: skip
        return (InputImpl.VideoFromFile(str(output)),)


def video_api_available() -> bool:
    """Whether this ComfyUI has the VIDEO type's API (comfy_api), which the node needs."""
    return InputImpl is not None
