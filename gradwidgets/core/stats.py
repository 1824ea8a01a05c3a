"""``GradientStats``: one reading of per-layer gradient statistics, as every reader (the probe, the sharded
reader, a run file, a replayed history) hands it out.

Plain numpy (no torch), so run files and views can build and read stats without the training stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GradientStats", "make_stats"]


@dataclass(frozen=True)
class GradientStats:
    """One reading of the probe: a row per module that directly owns parameters, in data-flow order.

    Arrays are float64 numpy arrays of length ``len(names)``. ``grad_norm`` is measured at every read;
    ``grad_mean_abs``, ``grad_max_abs``, ``weight_norm``, ``update_ratio`` and ``drift`` at step ``detail_step``
    (see ``GradientProbe(detail_every=...)``). ``update_ratio`` is ``|w_now - w_prev| / |w_now|`` with ``w_prev``
    the weights one read earlier (one optimizer step when read once per step; NaN at the first read).
    ``drift`` is ``|w_now - w_0| / |w_0|`` against the weights when the probe was made (or last
    ``rebase()``d): how far each layer has moved since training began.

    ``has_grad`` says which rows received a gradient since the previous read (``None`` grads, or grads only
    zeroed by ``zero_grad(set_to_none=False)``, did not); ``had_grad`` which rows had received one at an earlier
    read. ``aliases`` names, per row, the other modules that share its parameters (``"lm_head"`` on a tied
    embedding row). ``grad_scale`` is the AMP loss scale the gradients were divided by (1 without a scaler);
    ``skipped`` is True when those scaled gradients held inf/NaN, a step ``GradScaler`` skips.

    ``dead_fraction`` (at ``detail_step``): per row, the fraction of its output units (rows of its weight
    gradient: output features, conv channels) whose gradient is exactly zero - units no example of the batch
    passed a signal through (NaN for rows without a matrix-shaped weight). ``accumulated`` says which rows' gradient
    was added onto the previous read's (same tensor, one in-place write, no ``zero_grad()`` in between): a read
    between the micro-batches of gradient accumulation.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    roles: tuple[str, ...]
    blocks: np.ndarray
    grad_norm: np.ndarray
    grad_mean_abs: np.ndarray
    grad_max_abs: np.ndarray
    weight_norm: np.ndarray
    update_ratio: np.ndarray
    drift: np.ndarray
    frozen: np.ndarray
    has_grad: np.ndarray
    param_count: np.ndarray
    step: int
    loss: float = float("nan")
    time_grad_norm: np.ndarray | None = None
    time_state: str = ""
    detail_step: int = 0
    had_grad: np.ndarray | None = None
    aliases: tuple[str, ...] = ()
    grad_scale: float = 1.0
    skipped: bool = False
    dead_fraction: np.ndarray | None = None
    accumulated: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def trainable(self) -> np.ndarray:
        return ~self.frozen

    def block_indices(self) -> np.ndarray:
        """Sorted indices of the depth levels (blocks) in the stack."""
        return np.unique(self.blocks[self.blocks >= 0])

    def block_names(self) -> tuple[str, ...]:
        """A name per block in :meth:`block_indices` order: the members' common dotted prefix (``blocks.3``),
        or the single member's name."""
        out = []
        for block in self.block_indices():
            rows = [(n, r) for n, b, r in zip(self.names, self.blocks, self.roles, strict=True) if b == block]
            core = [n for n, r in rows if r != "norm"]
            members = [n for n, _ in rows]
            out.append(_common_prefix(core or members))
        return tuple(out)

    def block_grad_norm(self, include_norms: bool = False) -> np.ndarray:
        """L2 gradient norm of each block (over its non-norm layers), in :meth:`block_indices` order."""
        keep = np.ones(len(self), bool) if include_norms else np.array([r != "norm" for r in self.roles])
        out = []
        for block in self.block_indices():
            members = (self.blocks == block) & keep
            if not members.any():
                members = self.blocks == block
            out.append(float(np.sqrt(np.sum(self.grad_norm[members] ** 2))))
        return np.asarray(out, dtype=np.float64)

    def block_frozen(self) -> np.ndarray:
        """True for blocks whose every layer is frozen."""
        return np.array([bool(self.frozen[self.blocks == b].all()) for b in self.block_indices()])

    def time_ratio(self) -> float | None:
        """Gradient reaching time step 0 divided by the last step's (recurrent nets only)."""
        if self.time_grad_norm is None or len(self.time_grad_norm) < 2:
            return None
        last = float(self.time_grad_norm[-1])
        return float(self.time_grad_norm[0]) / last if last > 0 else float("nan")


def _common_prefix(names: Sequence[str]) -> str:
    """The block's name: its members' common dotted prefix, cut after its last numeric part (``blocks.3.layer``
    alone -> ``blocks.3``, ``1.layers.0.self_attn`` + ``1.layers.0.linear1`` -> ``1.layers.0``); ``rnn.l0`` and
    ``rnn.l0_reverse`` -> ``rnn.l0``."""
    names = list(dict.fromkeys(n.removesuffix("_reverse") for n in names))
    common: list[str] = []
    for pieces in zip(*(n.split(".") for n in names), strict=False):
        if len(set(pieces)) != 1:
            break
        common.append(pieces[0])
    numeric = [i for i, part in enumerate(common) if part.isdigit()]
    if numeric:
        common = common[: numeric[-1] + 1]
    return ".".join(common) or names[0]


def make_stats(values: dict[str, Any], n_layers: int) -> GradientStats:
    """A ``GradientStats`` from the fields given; any other required field is NaN (or False for the masks), so a
    reader that does not measure a field (a sharded model's weight motion, an older run file's new field) keeps
    working when the stats gain one."""
    filled = dict(values)
    for field in dataclasses.fields(GradientStats):
        no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if field.name not in filled and no_default:
            filled[field.name] = (
                np.zeros(n_layers, bool) if field.name in ("frozen", "has_grad") else np.full(n_layers, np.nan)
            )
    return GradientStats(**filled)
