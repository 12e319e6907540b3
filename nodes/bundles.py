"""The objects that travel on the pack's custom socket types.

``ADAATTN_MODEL``   -> :class:`LoadedModel` (encoder + family model, patched for ComfyUI)
``ADAATTN_CONTENT`` -> :class:`Features` with role "content" (an encoded content batch, maybe partly stylised)
``ADAATTN_STYLE``   -> :class:`Features` with role "style" (one encoded style batch)
                    or :class:`StyleBlend` (several styles with weights and regions)

Content and style have their own socket types, so the canvas refuses a style wired into a
content input (and the reverse); the nodes still check the role at run time, since API-format
workflows and the deprecated two-way Encode node can carry either.

The objects are immutable: ComfyUI caches node outputs and hands the same object to several
nodes, so a node returns a new object instead of changing one it received.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import Tensor

from ..adaattn_model.features import EncodedImage
from ..adaattn_model.model import AdaAttNModel, Family
from ..adaattn_model.pipeline import Stylizer

MODEL_TYPE = "ADAATTN_MODEL"
CONTENT_TYPE = "ADAATTN_CONTENT"
STYLE_TYPE = "ADAATTN_STYLE"
# The output of the deprecated AdaAttNEncode node (content or style, chosen by a widget): ComfyUI and its
# frontend accept a link when the comma-separated type sets overlap, so old workflows keep validating.
EITHER_TYPE = f"{CONTENT_TYPE},{STYLE_TYPE}"
CATEGORY = "style_transfer/AdaAttN"


@dataclass(frozen=True)
class LoadedModel:
    stylizer: Stylizer  # on its offload device until a node loads it
    patcher: object  # ComfyUI's model patcher around ``stylizer``
    name: str

    @property
    def family(self) -> Family:
        return self.stylizer.model.family

    @property
    def model(self) -> AdaAttNModel:
        return self.stylizer.model


@dataclass(frozen=True)
class Features:
    """Encoded images. ``role`` is "content" (padded for decoding) or "style".

    ``stylised`` holds the layers that AdaAttN nodes have replaced so far; the others are
    still the content's own features.
    """

    encoded: EncodedImage  # on the intermediate device
    role: str
    stylised: dict[str, Tensor] = field(default_factory=dict)
    image: Tensor | None = None  # content: the RGB images encoded [N,3,H,W], for the detail step of Decode

    @property
    def batch(self) -> int:
        return self.encoded.batch

    def with_layer(self, layer: str, value: Tensor) -> Features:
        return replace(self, stylised={**self.stylised, layer: value})

    def layer(self, name: str) -> Tensor:
        """The current feature at ``name``: stylised if a node did, else the content's own."""
        return self.stylised.get(name, self.encoded.features[name])


@dataclass(frozen=True)
class BlendPart:
    style: Features
    weight: float
    region: Tensor | None  # MASK over the content: where this style applies


@dataclass(frozen=True)
class StyleBlend:
    parts: tuple[BlendPart, ...]
    mode: str  # "mix" or "match"
