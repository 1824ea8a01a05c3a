"""The stacks of a model (an encoder and a decoder, a vision tower ...) and the first/last block ratio within each.

A verdict compares blocks within one stack: across an encoder-decoder the decoder's gradient reaches the encoder
at every block through cross-attention, so a ratio across stacks hides a vanishing decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .blocks import block_label
from .stats import GradientStats

__all__ = ["StackRatio", "by_design_zero", "display_name", "pick_stack", "ratio_series", "stack_of", "stack_ratios"]


def stack_of(block_name: str) -> str:
    """The stack a block belongs to: its name up to its last numeric part, digits dropped (``encoder.block.3``
    -> ``encoder.block``; ResNet stages ``layer1.0`` and ``layer4.2`` -> one stack ``layer``)."""
    parts = block_name.split(".")
    numeric = [i for i, part in enumerate(parts) if part.isdigit()]
    head = parts[: numeric[-1]] if numeric else parts[:-1]
    return ".".join("".join(ch for ch in part if not ch.isdigit()) for part in head)


@dataclass(frozen=True)
class StackRatio:
    stack: str
    ratio: float
    compared: tuple[str, ...]
    live_ids: np.ndarray
    live_norm: np.ndarray


def stack_ratios(stats: GradientStats, live_rows: np.ndarray) -> list[StackRatio]:
    """First live block's gradient norm / last live block's, per stack (an encoder and a decoder are compared
    within themselves: the decoder's gradient reaches the encoder through cross-attention at every block)."""
    block_ids = stats.block_indices()
    if not len(block_ids):
        return []
    block_norm = stats.block_grad_norm()
    names = stats.block_names()
    # A block without any gradient (dead, or a zero-initialised branch) is judged by the zero-gradient rules,
    # not by a ratio that it would turn into 0 or nan.
    live = np.array([bool(live_rows[stats.blocks == b].any()) for b in block_ids]) & (block_norm > 0)
    stacks: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        stacks.setdefault(stack_of(name), []).append(i)
    out = []
    for stack, members in stacks.items():
        index = np.array([i for i in members if live[i]], dtype=np.int64)
        ids, norms = block_ids[index] if len(index) else block_ids[:0], block_norm[index] if len(index) else np.zeros(0)
        if len(norms) < 2 or not np.isfinite(norms[-1]) or norms[-1] <= 0:
            out.append(StackRatio(stack, float("nan"), (), ids, norms))
            continue
        compared = (names[int(index[0])], names[int(index[-1])])
        out.append(StackRatio(stack, float(norms[0] / norms[-1]), compared, ids, norms))
    return out


def pick_stack(ratios: list[StackRatio], vanishing: float, exploding: float) -> StackRatio | None:
    """The stack the verdict speaks of: the most vanishing one (ratio below ``vanishing``), else the most exploding
    one (above ``exploding``), else the one with the most live blocks."""
    formed = [r for r in ratios if math.isfinite(r.ratio)]
    if not formed:
        return None
    low = min(formed, key=lambda r: r.ratio)
    if low.ratio < vanishing:
        return low
    high = max(formed, key=lambda r: r.ratio)
    if high.ratio > exploding:
        return high
    return max(formed, key=lambda r: len(r.live_norm))


def display_name(name: str, stats: GradientStats) -> str:
    """A block's name as the bars show it: a repeated block as the blocks view names it (``transformer.h.3`` ->
    ``h.3``, :func:`~gradwidgets.core.blocks.block_label`); a bare ``nn.Sequential`` index (``20``) is unreadable
    next to bars numbered 1..N, so it reads ``layer 11 (20)``."""
    if name.isdigit() and name in stats.names:
        return f"layer {stats.names.index(name) + 1} ({name})"
    return block_label(name, stats.names)


def by_design_zero(stats: GradientStats, rows: np.ndarray) -> np.ndarray:
    """Rows whose zero gradient is there by design: a zero-initialised layer next to them (LoRA's ``B = 0``
    leaves ``lora_A`` without gradient; ``zero_init_residual``'s last BatchNorm weight 0 leaves the branch's
    convolutions without one) - the layers sharing its parent module (or its block) with it."""
    out = np.zeros(len(stats), bool)
    weights = stats.weight_norm
    if weights is None or not np.any(weights == 0):
        return out
    zero_init = [n.split(".") for n, w, f in zip(stats.names, weights, stats.frozen, strict=True) if w == 0 and not f]
    for i in np.flatnonzero(rows):
        parts = stats.names[i].split(".")
        for z in zero_init:
            common = 0
            for a, b in zip(parts, z, strict=False):
                if a != b:
                    break
                common += 1
            if common >= max(len(z) - 2, 1) and z != parts:
                out[i] = True
                break
    return out


def ratio_series(history: Any, stats: GradientStats, chosen: StackRatio) -> np.ndarray:
    """The chosen stack's first/last block ratio at every read the history holds (NaN where not formed)."""
    try:
        grads = np.asarray(history.grad_norm, dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return np.zeros(0)
    if grads.ndim != 2 or grads.shape[1] != len(stats) or len(chosen.live_ids) < 2:
        return np.zeros(0)
    keep = np.array([r != "norm" for r in stats.roles])

    def block(b: int) -> np.ndarray:
        norms: np.ndarray = np.sqrt(np.sum(grads[:, (stats.blocks == b) & keep] ** 2, axis=1))
        return norms

    with np.errstate(divide="ignore", invalid="ignore"):
        ratios: np.ndarray = block(int(chosen.live_ids[0])) / block(int(chosen.live_ids[-1]))
    return ratios
