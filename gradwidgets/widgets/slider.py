"""``move_slider``: change an ``IntSlider``'s range and value so that no browser misreads the update."""

from __future__ import annotations

import ipywidgets as widgets

__all__ = ["move_slider"]


def move_slider(slider: widgets.IntSlider, low: int, high: int, value: int | None = None) -> None:
    """Give ``slider`` the range ``[low, high]`` and ``value`` (default: its value, kept inside the range) in
    messages a browser cannot misread: each keeps the browser's old and new value inside its old and new range.

    Why: the browser applies the keys of one update message one by one, in the order the kernel serialised them,
    and ipywidgets keeps the keys of a held update in a set, so that order depends on the kernel process's string
    hashing. When ``value`` came before a ``max`` that admits it, the browser's slider clamped the value to the old
    maximum and, with ``continuous_update``, sent that number back as if the user had dragged the slider: the
    RunViewer then stopped following, its bars, banner and slider frozen on an old step while the status line went
    on (in about half of the kernels). So: widen the range to hold both values, move the value, narrow the range.
    Nothing is sent for what did not change.
    """
    low, high = int(low), int(max(low, high))
    target = min(max(int(slider.value if value is None else value), low), high)
    with slider.hold_sync():
        slider.min, slider.max = min(slider.min, low), max(slider.max, high)
    slider.value = target
    with slider.hold_sync():
        slider.min = low
        slider.max = high
