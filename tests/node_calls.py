"""Call a node the way ComfyUI does: by keyword, with the widget defaults its INPUT_TYPES declares.

    out = call_node(AdaAttNStylize, model=model, content=image, style=style, strength=0.5)

Widgets not given take their declared default (a combo without one takes its first option); inputs
that are sockets (IMAGE, MASK, the pack's types) and have no default must be given when required.
"""

from __future__ import annotations

from typing import Any

SOCKET = object()  # marks a required input without a default


def widget_default(kind, options: dict) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(kind, list):
        return kind[0] if kind else SOCKET
    return SOCKET


def node_inputs(cls, **given) -> dict[str, Any]:
    """The keyword arguments ComfyUI would pass: ``given`` over the declared defaults."""
    spec = cls.INPUT_TYPES()
    known = {**spec.get("required", {}), **spec.get("optional", {})}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"{cls.__name__} has no input {', '.join(unknown)}")
    kwargs = {}
    for name, entry in spec.get("required", {}).items():
        value = given[name] if name in given else widget_default(entry[0], entry[1] if len(entry) > 1 else {})
        if value is SOCKET:
            raise TypeError(f"{cls.__name__} needs its required input {name!r}")
        kwargs[name] = value
    for name, entry in spec.get("optional", {}).items():
        if name in given:
            kwargs[name] = given[name]
        elif "default" in (entry[1] if len(entry) > 1 else {}):
            kwargs[name] = entry[1]["default"]
    return kwargs


def call_node(cls, **given):
    """Run a node's FUNCTION on a fresh instance; returns what it returns (a tuple, or a ui/result dict)."""
    return getattr(cls(), cls.FUNCTION)(**node_inputs(cls, **given))


def first(cls, **given):
    """The first output of a node (most nodes have one)."""
    out = call_node(cls, **given)
    return out["result"][0] if isinstance(out, dict) else out[0]
