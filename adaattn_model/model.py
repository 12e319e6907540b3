"""Model families and the module that holds a family's trainable parts.

The encoder (:class:`~adaattn_model.vgg.VGGEncoder`) is shared by every family and
lives in its own weights file; an :class:`AdaAttNModel` holds the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .adaattn import AttentionProjections
from .attention import AttentionSpec
from .decoder import Decoder, Fusion
from .features import KEY_CHANNELS, TAP_CHANNELS
from .progress import Progress, expect

# The lite family's defaults (README, quality: chosen on tuning pairs, reported on held-out ones):
# the locality of its cosine attention, how far its statistics move to the whole style's (its
# AdaIN decoder was trained on globally normalised features), and the share of the content's
# fine luma detail put back after decoding.
LITE_TEMPERATURE = 0.03
LITE_GLOBAL_SHARE = 0.7
LITE_DETAIL = 0.6


@dataclass(frozen=True)
class Family:
    """What a model family is made of and how the reference runs it."""

    name: str
    layers: tuple[str, ...]  # layers it stylises, all of which feed its decoder
    learned: bool  # learned f/g/h projections per layer (else parameter-free)
    attention: AttentionSpec  # default attention variant
    max_sample: Mapping[str, int] = field(default_factory=dict)  # official sampling limits
    decoder_start: str = "relu4_1"
    skip: bool = False  # relu3_1 output concatenated into the decoder
    fusion: bool = False  # relu4_1 + relu5_1 merge block
    detail: float = 0.0  # default share of the content's fine luma detail put back (detail.py)
    summary: str = ""


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "official-image",
            ("relu3_1", "relu4_1", "relu5_1"),
            learned=True,
            attention=AttentionSpec("softmax"),
            max_sample={"relu3_1": 64 * 64, "relu4_1": 256 * 256, "relu5_1": 256 * 256},
            skip=True,
            fusion=True,
            summary="the authors' image model: AdaAttN at relu3_1, relu4_1 and relu5_1",
        ),
        Family(
            "official-video",
            ("relu3_1",),
            learned=True,
            attention=AttentionSpec("cosine"),
            max_sample={"relu3_1": 256 * 256},
            decoder_start="relu3_1",
            summary="the authors' video model: cosine AdaAttN at relu3_1",
        ),
        Family(
            "lite",
            ("relu4_1",),
            learned=False,
            attention=AttentionSpec("cosine_softmax", LITE_TEMPERATURE, LITE_GLOBAL_SHARE),
            max_sample={"relu4_1": 256 * 256},
            detail=LITE_DETAIL,
            summary="training-free AdaAttN at relu4_1 with the AdaIN decoder",
        ),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}") from None


class AdaAttNModel(nn.Module):
    """A family's attention projections, fusion block and decoder."""

    def __init__(self, family: str) -> None:
        super().__init__()
        self.family = get_family(family)
        spec = self.family
        if spec.learned:
            self.attention = nn.ModuleDict(
                {layer: AttentionProjections(TAP_CHANNELS[layer], KEY_CHANNELS[layer]) for layer in spec.layers}
            )
        if spec.fusion:
            self.fusion = Fusion(512)
        self.decoder = Decoder(spec.decoder_start, skip_channels=256 if spec.skip else 0)

    def projections(self, layer: str) -> AttentionProjections | None:
        """The learned projections at ``layer``, or None for parameter-free attention."""
        if layer not in self.family.layers:
            supported = ", ".join(self.family.layers)
            raise ValueError(f"the {self.family.name} model cannot stylise {layer}; it uses {supported}")
        return self.attention[layer] if self.family.learned else None

    def decode_units(self, batch: int, height: int, width: int, device: torch.device) -> int:
        """Progress steps of :meth:`decode` for a padded image of ``height x width`` on ``device``."""
        scale, channels = (8, 512) if self.family.decoder_start == "relu4_1" else (4, 256)
        shape = (batch, channels, height // scale, width // scale)
        fusion = self.fusion.units(shape, device) if self.family.fusion else 0  # it merges at relu4_1
        return fusion + self.decoder.units(shape, device)

    def decode(self, features: Mapping[str, Tensor], *, progress: Progress | None = None) -> Tensor:
        """RGB images [N,3,H,W] (unclamped) from the features at the family's layers.

        ``progress`` steps per layer (per band of rows of a large layer)."""
        missing = [layer for layer in self.family.layers if layer not in features]
        if missing:
            raise ValueError(f"the {self.family.name} decoder needs features at {', '.join(missing)}")
        if self.family.fusion:
            relu4_1 = features["relu4_1"]
            if progress is not None:
                expect(progress, self.fusion.units(tuple(relu4_1.shape), relu4_1.device))
            merged = self.fusion(relu4_1, features["relu5_1"], progress=progress)
            return self.decoder(merged, skip=features["relu3_1"], progress=progress)
        return self.decoder(features[self.family.decoder_start], progress=progress)
