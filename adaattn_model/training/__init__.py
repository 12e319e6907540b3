"""Training the learned families (``official-image``, ``official-video``) with the paper's losses.

Needs torchvision only for data loading (:mod:`.data`); the losses and the forward pass
are plain torch. See the README section "Training" and the design notes on the recipe.
"""

from .forward import LOSS_LAYERS, encode_layers, stylize_train
from .losses import LOCAL_MAX_SAMPLE, LossWeights, losses, similarity_loss

__all__ = [
    "LOCAL_MAX_SAMPLE",
    "LOSS_LAYERS",
    "LossWeights",
    "encode_layers",
    "losses",
    "similarity_loss",
    "stylize_train",
]
