"""ComfyUI node classes over :mod:`adaattn_model` (imported only inside ComfyUI)."""

from . import host
from .registry import mappings

host.register_model_folder()

NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings()
