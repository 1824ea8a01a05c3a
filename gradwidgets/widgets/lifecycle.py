"""Closing an app's widgets: every model it created (boxes, figures, marks, scales, layouts) gets its comm
closed, so a closed app leaves no live widget models behind in the kernel or the front end."""

from __future__ import annotations

from collections.abc import Iterator

import ipywidgets as widgets

__all__ = ["close_tree", "walk_widgets"]


def walk_widgets(root: widgets.Widget) -> Iterator[widgets.Widget]:
    """``root`` and every widget reachable through its synced traits (children, marks, scales, tooltip, ...)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        yield widget
        for name in widget.keys:
            value = getattr(widget, name, None)
            values = (
                value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            )
            stack.extend(v for v in values if isinstance(v, widgets.Widget))


def close_tree(root: widgets.Widget, keep: tuple[widgets.Widget, ...] = ()) -> None:
    """Close ``root`` and everything under it, except the widgets in ``keep`` (e.g. a scale shared elsewhere)."""
    kept = {id(w) for w in keep}
    for widget in list(walk_widgets(root)):
        if id(widget) not in kept:
            widgets.Widget.close(widget)  # the base close: an app's own close() is what called us
