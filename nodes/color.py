"""Colour preservation as its own node, for the composable graph."""

from __future__ import annotations

from ..adaattn_model.color import match_color, preserve_luminance
from . import host
from .bundles import CATEGORY
from .tensors import image_to_rgb, rgb_to_image

MODES = ("luminance", "match")


class AdaAttNColorTransfer:
    DESCRIPTION = (
        "Colour preservation. luminance: keep the light and texture of 'image' (a stylised result) with the "
        "colours of 'reference' (the content). match: recolour 'image' (a style, before encoding it) so its "
        "colour statistics equal those of 'reference' (the content)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The recoloured image, the size of 'image'.",)
    FUNCTION = "transfer"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "luminance: the stylised result. match: the style image."}),
                "reference": ("IMAGE", {"tooltip": "The image whose colours to keep (the content)."}),
                "mode": (list(MODES), {"default": "luminance", "tooltip": "luminance: after stylising. match: "
                         "before encoding the style."}),  # fmt: skip
            }
        }

    def transfer(self, image, reference, mode: str):
        rgb = image_to_rgb(image)
        ref = image_to_rgb(reference, "reference")
        where, dtype = host.intermediate()
        if mode == "luminance":
            if ref.shape[-2:] != rgb.shape[-2:] or ref.shape[0] not in (1, rgb.shape[0]):
                raise ValueError(
                    f"luminance mode needs a reference of the image's size ({rgb.shape[-1]}x{rgb.shape[-2]}), "
                    f"got {ref.shape[-1]}x{ref.shape[-2]}"
                )
            out = preserve_luminance(rgb, ref.expand(rgb.shape[0], -1, -1, -1))
        elif mode == "match":
            if ref.shape[0] not in (1, rgb.shape[0]):
                raise ValueError(f"{ref.shape[0]} reference images for {rgb.shape[0]} images")
            out = match_color(rgb, ref)
        else:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        return (rgb_to_image(out, where, dtype),)
