"""Random weights in the released key layouts, scaled so activations stay O(1).

Kaiming-like conv weights keep feature magnitudes through the VGG and decoders; the
attention projections are scaled so logits have a standard deviation of a few units
(a peaked but not one-hot softmax, as in a trained model).
"""

from __future__ import annotations

from pathlib import Path

import torch

from adaattn_model.tools.convert import source_shapes

# Where each released file sits in the authors' release (layout -> relative path).
RELEASE_FILES = {
    "vgg": "checkpoints/vgg_normalised.pth",
    "relu3_1_attention": "checkpoints/AdaAttN/latest_net_adaattn_3.pth",
    "transformer": "checkpoints/AdaAttN/latest_net_transformer.pth",
    "image_decoder": "checkpoints/AdaAttN/latest_net_decoder.pth",
}
VIDEO_FILES = {
    "relu3_1_attention": "attn_adain_video/latest_net_transformer.pth",
    "video_decoder": "attn_adain_video/latest_net_decoder.pth",
}


def random_state(layout: str, generator: torch.Generator, dtype=torch.float32) -> dict[str, torch.Tensor]:
    state = {}
    for name, shape in source_shapes(layout).items():
        if name.endswith(".bias"):
            state.setdefault(name, 0.02 * torch.randn(shape, generator=generator, dtype=dtype))
            continue
        fan_in = shape[1] * shape[2] * shape[3]
        prefix = name.rsplit(".", 1)[0]
        if layout == "vgg" and prefix == "0":  # the colour conv: near identity
            w = torch.eye(3, dtype=dtype).view(3, 3, 1, 1) + 0.1 * torch.randn(shape, generator=generator, dtype=dtype)
        elif prefix.split(".")[-1] in ("f", "g"):  # query/key projections: logits with std ~ 4
            w = torch.randn(shape, generator=generator, dtype=dtype) * (2.0 / fan_in**0.5) / fan_in**0.25
        elif prefix.split(".")[-1] == "h":
            w = torch.randn(shape, generator=generator, dtype=dtype) / fan_in**0.5
        else:
            w = torch.randn(shape, generator=generator, dtype=dtype) * (2.0 / fan_in) ** 0.5
        if shape[0] == 3 and prefix != "0":  # a decoder's RGB conv: outputs spread like an image
            w = 0.2 * w
            state[f"{prefix}.bias"] = torch.full((3,), 0.5, dtype=dtype)
        state[name] = w
    return state


def write_release(root: Path, seed: int = 0, video: bool = True) -> dict[str, dict[str, torch.Tensor]]:
    """Write random weights as the authors' release folder tree; returns the states by layout."""
    generator = torch.Generator().manual_seed(seed)
    files = dict(RELEASE_FILES)
    states = {}
    for layout, rel in files.items():
        states[layout] = random_state(layout, generator)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(states[layout], root / rel)
    if video:
        for layout, rel in VIDEO_FILES.items():
            key = f"video_{layout}"
            states[key] = random_state(layout, generator)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            torch.save(states[key], root / rel)
    return states


def write_adain(root: Path, seed: int = 1) -> dict[str, dict[str, torch.Tensor]]:
    """Random AdaIN-release files (vgg_normalised.pth, decoder.pth) in ``root``."""
    generator = torch.Generator().manual_seed(seed)
    states = {"vgg": random_state("vgg", generator), "adain_decoder": random_state("adain_decoder", generator)}
    root.mkdir(parents=True, exist_ok=True)
    torch.save(states["vgg"], root / "vgg_normalised.pth")
    torch.save(states["adain_decoder"], root / "decoder.pth")
    return states
