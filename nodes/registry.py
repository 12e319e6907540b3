"""The one table of the pack's nodes: node id -> class, display title, search aliases.

ComfyUI matches saved workflows by node id, so an id never changes once shipped; the title is
what the canvas shows, and the aliases are extra words the node search finds it by (the classic
API reads them from the class attribute ``SEARCH_ALIASES``). To add a node, add one row.
"""

from __future__ import annotations

from dataclasses import dataclass

from .blend import AdaAttNBlendStyles
from .color import AdaAttNColorTransfer
from .composable import AdaAttNAttention, AdaAttNDecode, AdaAttNEncode, AdaAttNEncodeContent, AdaAttNEncodeStyle
from .frames_io import AdaAttNLoadFrames
from .loaders import AdaAttNLoader
from .metrics import AdaAttNMetrics
from .stylize import AdaAttNStylize, AdaAttNStylizeFrames
from .video import AdaAttNStylizeVideo, video_api_available


@dataclass(frozen=True)
class Entry:
    cls: type
    title: str
    aliases: tuple[str, ...] = ()


NODES: dict[str, Entry] = {
    "AdaAttNLoader": Entry(AdaAttNLoader, "Load AdaAttN Model",
                           ("adaattn", "style transfer model", "load style model")),
    "AdaAttNStylize": Entry(AdaAttNStylize, "AdaAttN Stylize",
                            ("style transfer", "neural style", "stylize image", "artistic style", "painting style")),
    "AdaAttNEncodeContent": Entry(AdaAttNEncodeContent, "AdaAttN Encode Content",
                                  ("encode content", "content features", "vgg encode")),
    "AdaAttNEncodeStyle": Entry(AdaAttNEncodeStyle, "AdaAttN Encode Style",
                                ("encode style", "style features", "style image")),
    "AdaAttNAttention": Entry(AdaAttNAttention, "AdaAttN Attention (one layer)",
                              ("adaptive attention normalization", "per layer style", "style attention")),
    "AdaAttNBlendStyles": Entry(AdaAttNBlendStyles, "AdaAttN Blend Styles",
                                ("mix styles", "multiple styles", "regional style", "style interpolation")),
    "AdaAttNDecode": Entry(AdaAttNDecode, "AdaAttN Decode", ("decode features", "features to image")),
    "AdaAttNStylizeFrames": Entry(AdaAttNStylizeFrames, "AdaAttN Stylize Frames",
                                  ("video style transfer", "stylize video", "stylize frames", "flicker")),
    "AdaAttNStylizeVideo": Entry(AdaAttNStylizeVideo, "AdaAttN Stylize Video",
                                 ("video style transfer", "stylize video file", "streaming video")),
    "AdaAttNLoadFrames": Entry(AdaAttNLoadFrames, "AdaAttN Load Frames",
                               ("image sequence", "load frames folder", "frames from folder")),
    "AdaAttNColorTransfer": Entry(AdaAttNColorTransfer, "AdaAttN Color Transfer",
                                  ("preserve color", "keep colors", "luminance transfer", "color match")),
    "AdaAttNMetrics": Entry(AdaAttNMetrics, "AdaAttN Metrics", ("ssim", "style loss", "warping error", "flicker")),
    # Deprecated (hidden from the node search): the former two-way encoder, so old workflows still load.
    "AdaAttNEncode": Entry(AdaAttNEncode, "AdaAttN Encode (deprecated)"),
}  # fmt: skip


def available(table: dict[str, Entry] = NODES) -> dict[str, Entry]:
    """The rows this ComfyUI can run: all but the video node where it has no VIDEO type (comfy_api)."""
    return {k: e for k, e in table.items() if e.cls is not AdaAttNStylizeVideo or video_api_available()}


def mappings(table: dict[str, Entry] = NODES) -> tuple[dict[str, type], dict[str, str]]:
    """``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` of the table's available rows; gives each
    class its aliases."""
    classes, titles = {}, {}
    for node_id, entry in available(table).items():
        entry.cls.SEARCH_ALIASES = list(entry.aliases)
        classes[node_id], titles[node_id] = entry.cls, entry.title
    return classes, titles
