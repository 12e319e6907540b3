"""Quality metrics as a node: images in, numbers out as JSON text."""

from __future__ import annotations

import json

from ..adaattn_model.images import resize_max_side
from ..adaattn_model.metrics import content_loss, ssim, style_loss_from_stats, style_statistics, temporal_metrics
from . import host
from .bundles import CATEGORY, LoadedModel
from .common import MODEL_INPUT, STYLE_MAX_SIDE_INPUT, activation_bytes, run_in_chunks
from .tensors import image_to_rgb


class AdaAttNMetrics:
    DESCRIPTION = (
        "Measures a stylisation: SSIM and content loss against the content, style loss against the style (with "
        "the model's VGG encoder), and for frame sequences the temporal stability: short- and long-range "
        "warping error (needs OpenCV installed) and the flow-free frame-difference error. Outputs JSON text; "
        "show it with Preview as Text."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("metrics",)
    OUTPUT_TOOLTIPS = ("The metrics as JSON text.",)
    FUNCTION = "measure"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "result": ("IMAGE", {"tooltip": "The stylised images or frames."}),
                "content": ("IMAGE", {"tooltip": "The content images or input frames, same count and size."}),
                "long_range": ("INT", {"default": 5, "min": 1, "max": 100, "advanced": True, "tooltip": "Frame gap "
                               "of the long-range warping error (frame sequences only)."}),  # fmt: skip
                "style_max_side": ("INT", {**STYLE_MAX_SIDE_INPUT[1], "advanced": True}),
            },
            "optional": {
                "style": ("IMAGE", {"tooltip": "The style image, for the style loss."}),
            },
        }

    def measure(self, model: LoadedModel, result, content, long_range, style_max_side, style=None):
        outputs, inputs = image_to_rgb(result, "result"), image_to_rgb(content, "content")
        if outputs.shape != inputs.shape:
            raise ValueError(
                f"result {list(result.shape)} and content {list(content.shape)} must have the same count and size"
            )
        device = host.load(model.patcher, activation_bytes(*outputs.shape[-2:]))
        encoder = model.stylizer.encoder
        report: dict = {"images": outputs.shape[0], "ssim": float(ssim(outputs, inputs).mean())}
        losses = {"content_loss": [], "style_loss": []}
        target = None
        if style is not None:
            target = style_statistics(encoder, resize_max_side(image_to_rgb(style, "style")[:1], style_max_side).to(device))

        def step(start: int, stop: int) -> None:
            out, ref = outputs[start:stop].to(device), inputs[start:stop].to(device)
            losses["content_loss"] += content_loss(encoder, out, ref).tolist()
            if target is not None:
                losses["style_loss"] += style_loss_from_stats(style_statistics(encoder, out), target).tolist()

        run_in_chunks(outputs.shape[0], 1, step)
        for key, values in losses.items():
            if values:
                report[key] = sum(values) / len(values)
        if outputs.shape[0] >= 2:
            report.update(temporal_metrics(inputs, outputs, min(long_range, outputs.shape[0] - 1)))
        text = json.dumps(report, indent=2)
        return {"ui": {"text": [text]}, "result": (text,)}
