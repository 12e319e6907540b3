"""Blending two or more styles, with scalar weights or per-pixel region masks."""

from __future__ import annotations

from ..adaattn_model.adaattn import BLEND_MODES
from .bundles import CATEGORY, STYLE_TYPE, BlendPart, Features, StyleBlend

MAX_STYLES = 4


def _weight(index: int, default: float):
    return ("FLOAT", {"default": default, "min": 0.0, "max": 100.0, "step": 0.05,
                      "tooltip": f"Relative weight of style {index} (weights need not add up to 1)."})  # fmt: skip


def _style(index: int):
    return (STYLE_TYPE, {"tooltip": f"Style {index}: style features from AdaAttN Encode Style."})


def _region(index: int):
    return ("MASK", {"tooltip": f"Where style {index} applies over the content (1 = here). Content areas no "
                     "style region covers keep the content."})  # fmt: skip


class AdaAttNBlendStyles:
    DESCRIPTION = (
        "Blends 2 to 4 styles into one style input for AdaAttN Attention. mix: each content position mixes "
        "the styles' attention by weight (weights 1/0 give that style alone). match: one attention over all "
        "styles, so each area picks the style that fits it best. Region masks turn the blend into regional "
        "styles: each style only where its mask is."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (STYLE_TYPE,)
    RETURN_NAMES = ("style",)
    OUTPUT_TOOLTIPS = ("The blended styles, for the style input of AdaAttN Attention.",)
    FUNCTION = "blend"

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for i in range(3, MAX_STYLES + 1):
            optional[f"style_{i}"] = _style(i)
            optional[f"weight_{i}"] = _weight(i, 1.0)
        for i in range(1, MAX_STYLES + 1):
            optional[f"region_{i}"] = _region(i)
        return {
            "required": {
                "style_1": _style(1),
                "weight_1": _weight(1, 1.0),
                "style_2": _style(2),
                "weight_2": _weight(2, 1.0),
                "mode": (list(BLEND_MODES), {"default": "mix", "tooltip": "mix: blend the styles everywhere by "
                         "weight. match: each area takes the style that fits it (weights bias the choice)."}),  # fmt: skip
            },
            "optional": optional,
        }

    def blend(self, mode: str, **inputs):
        if mode not in BLEND_MODES:
            raise ValueError(f"mode must be one of {', '.join(BLEND_MODES)}")
        parts = []
        for i in range(1, MAX_STYLES + 1):
            style = inputs.get(f"style_{i}")
            if style is None:
                if inputs.get(f"region_{i}") is not None:
                    raise ValueError(f"region_{i} is connected but style_{i} is not")
                continue
            if isinstance(style, StyleBlend):
                raise ValueError(f"style_{i} is a blend, and blends do not nest: connect its styles here instead")
            if not isinstance(style, Features) or style.role != "style":
                raise ValueError(f"style_{i} must be style features from AdaAttN Encode Style")
            weight = float(inputs.get(f"weight_{i}", 1.0))
            if not weight >= 0:
                raise ValueError(f"weight_{i} must be >= 0")
            parts.append(BlendPart(style, weight, inputs.get(f"region_{i}")))
        if sum(p.weight for p in parts) <= 0:
            raise ValueError("the style weights add up to zero")
        return (StyleBlend(tuple(parts), mode),)
