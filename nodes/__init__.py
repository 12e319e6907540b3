"""ComfyUI node classes over :mod:`adaattn_model` (imported only inside ComfyUI)."""

from . import blend, color, composable, frames_io, host, loaders, metrics, stylize, video

host.register_model_folder()

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for family in (loaders, composable, blend, stylize, frames_io, color, metrics, video):
    NODE_CLASS_MAPPINGS.update(family.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(family.NODE_DISPLAY_NAME_MAPPINGS)
