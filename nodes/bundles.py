"""The objects that travel on the pack's custom socket types.

``ADAATTN_MODEL``    -> :class:`LoadedModel`  (encoder + family model, patched for ComfyUI)
``ADAATTN_FEATURES`` -> :class:`Features`     (an encoded content or style batch)
                     or :class:`StyleBlend`   (several styles with weights and regions)

They are immutable: ComfyUI caches node outputs and hands the same object to several
nodes, so a node returns a new object instead of changing one it received.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import Tensor

from ..adaattn_model.features import EncodedImage
from ..adaattn_model.model import AdaAttNModel, Family
from ..adaattn_model.pipeline import Stylizer

MODEL_TYPE = "ADAATTN_MODEL"
FEATURES_TYPE = "ADAATTN_FEATURES"
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
