"""AdaAttN style transfer nodes for ComfyUI.

The node classes are imported only when ComfyUI is present, so this package (and the
pure-PyTorch ``adaattn_model`` inside it) can be imported and tested on its own.
"""

try:
    import comfy.model_management  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
