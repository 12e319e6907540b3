"""The commands of ``python -m adaattn_model`` (fetch, convert, info, stylize, eval), apart from the engine.

The engine (``adaattn_model``) never imports from here; these modules import the engine.
"""
