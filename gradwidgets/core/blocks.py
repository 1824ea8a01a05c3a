"""Blocks first: a language model's rows grouped into one bar per block, by row name only.

A 12-block GPT has 75 rows (qkv, projections, MLP layers, norms ...): a comb in which nobody finds block 7. The
engineer thinks in blocks, so the views show ``embeddings, h.0 ... h.11, final norm`` (``layers.N`` for Llama,
``encoder.block.N`` and ``decoder.block.N`` side by side for T5, ``layer1.0`` ... for a ResNet), and a block
expands into its modules grouped by kind (attention / MLP / conv / norm / other).

Grouping reads only the rows' names (and roles and kinds where known), so a run file replayed without its model
(``RunViewer``, ``gradwidgets watch``) groups exactly like the live probe. The repeated blocks are the numbered
children of the stack containers :mod:`.layout` finds (``_stack_containers``: the same rule the probe uses for
``Row.block``). A block is named by the shortest tail of its container's name that tells the stacks apart plus its
number (``transformer.h.3`` -> ``h.3``; ``encoder.block.3`` stays whole because ``decoder.block`` exists too).

Numbers of a group (what a bar shows), from its member rows' numbers:

* ``grad_norm``, ``weight_norm``: the L2 norm over all the group's parameters, ``sqrt(sum of squared row norms)``;
* ``update_ratio``: ``|dW| / |W|`` over the group's parameters, ``sqrt(sum (r_i |w_i|)^2) / sqrt(sum |w_i|^2)``
  (exact: ``r_i |w_i|`` is row i's ``|dW|``);
* ``drift``: the largest member's drift (the rows' initial weight norms are not recorded, so no exact pooled value);
* ``grad_mean_abs``: the element-weighted mean (by parameter count); ``grad_max_abs``: the maximum;
* ``dead_fraction``: the largest member's; ``frozen``: every member frozen; ``has_grad``/``had_grad``: any member.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layout import _NUMERIC, _own_name, _stack_containers
from .stats import GradientStats

__all__ = [
    "LEVELS",
    "PARTS",
    "BlockLayout",
    "BlockStats",
    "block_column",
    "block_key",
    "block_label",
    "block_layout",
    "group_columns",
    "group_matrix",
    "group_stats",
]

LEVELS = ("blocks", "kinds", "rows")
"""How far the views expand a model: one bar per block, per block and module kind, or per row."""
PARTS = ("attention", "mlp", "conv", "norm", "other")
"""The module kinds a block expands into, in this order."""

_ATTENTION = re.compile(r"att|attn|attention|self_attn|qkv", re.IGNORECASE)
_MLP = re.compile(r"mlp|ffn|feed_?forward|ff$|dense|fc\d*$|c_fc|intermediate|gate_proj|up_proj|down_proj|^w[io]$")
_NORM = re.compile(r"(^|_)ln(_|\d|$)|norm", re.IGNORECASE)


@dataclass(frozen=True)
class BlockLayout:
    """How the rows of a model group: ``row_block`` names each row's bar at the ``blocks`` level (``h.3``,
    ``embeddings``, ``final norm``, ``head``; a row's own name where the model has no repeated blocks),
    ``row_part`` its module kind inside a block, ``in_block`` whether it sits in a repeated block.
    ``repeated``: some block holds more than one non-norm row (a transformer or ResNet block, not one MLP layer
    with its norm): only then do the views start grouped."""

    names: tuple[str, ...]
    row_block: tuple[str, ...]
    row_part: tuple[str, ...]
    in_block: tuple[bool, ...]
    repeated: bool

    def labels(self, level: str) -> tuple[str, ...]:
        """Each row's bar label at ``level`` (see :data:`LEVELS`)."""
        if level == "rows" or not self.repeated:
            return self.names
        if level == "kinds":
            return tuple(
                f"{block} {part}" if inside else block
                for block, part, inside in zip(self.row_block, self.row_part, self.in_block, strict=True)
            )
        return self.row_block


def _part(name: str, kind: str, role: str) -> str:
    """A row's module kind inside its block: from its role and class name, else from its name's parts."""
    if role == "norm" or "Norm" in kind:
        return "norm"
    segments = name.split(".")
    if "Attention" in kind or any(_ATTENTION.search(s) for s in segments):
        return "attention"
    if any(_MLP.search(s) for s in segments[1:] or segments):
        return "mlp"
    if any(_NORM.search(s) for s in segments[-1:]):
        return "norm"
    if "Conv" in kind:
        return "conv"
    return "other"


def _container_labels(containers: set[str]) -> dict[str, str]:
    """The shortest tail of each stack container's name that no other container ends with (``transformer.h`` ->
    ``h``; ``encoder.block`` and ``decoder.block`` keep their first part)."""
    out = {}
    split = {c: c.split(".") if c else [] for c in containers}
    for container, parts in split.items():
        label = container
        for k in range(1, len(parts) + 1):
            tail = parts[-k:]
            if not any(other != container and o[-k:] == tail for other, o in split.items()):
                label = ".".join(tail)
                break
        out[container] = label
    return out


def _block_of(name: str, stacks: set[str], short: dict[str, str]) -> tuple[str, str] | None:
    """The repeated block a row sits in, qualified and as shown (``transformer.h.3``, ``h.3``), or None outside
    every stack."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        container = ".".join(parts[:i])
        if _NUMERIC.match(part) and container in stacks:
            head = short[container]
            return ".".join(parts[: i + 1]), (f"{head}.{part}" if head else f"block {part}")
    return None


@functools.lru_cache(maxsize=64)
def _layout(names: tuple[str, ...], roles: tuple[str, ...], kinds: tuple[str, ...]) -> BlockLayout:
    own = [_own_name(n) for n in names]
    stacks = _stack_containers(own)
    short = _container_labels(stacks)
    found = [_block_of(n, stacks, short) for n in own]
    blocks = [f[1] if f is not None else None for f in found]
    parts = tuple(_part(n, k, r) for n, k, r in zip(own, kinds, roles, strict=True))
    inside = tuple(b is not None for b in blocks)
    non_norm: dict[str, int] = {}
    for block, part in zip(blocks, parts, strict=True):
        if block is not None and part != "norm":
            non_norm[block] = non_norm.get(block, 0) + 1
    repeated = len(non_norm) >= 2 and max(non_norm.values()) >= 2
    if not repeated:
        return BlockLayout(names, names, parts, inside, False)
    body = [i for i, b in enumerate(blocks) if b is not None]
    first, last = body[0], body[-1]
    labels: list[str] = []
    for i, (name, role, kind, block) in enumerate(zip(own, roles, kinds, blocks, strict=True)):
        if block is not None:
            labels.append(block)
        elif role == "embedding" or "Embedding" in kind:
            labels.append("embeddings")
        elif i < first:
            labels.append("stem")
        elif parts[i] == "norm":
            labels.append("final norm")
        elif i > last or role == "head":
            labels.append("head")
        else:
            labels.append(name)  # a module between two stacks: its own name
    labels = _qualify_repeats(labels, own, inside)
    return BlockLayout(names, tuple(labels), parts, inside, True)


def _qualify_repeats(labels: list[str], names: list[str], inside: tuple[bool, ...]) -> list[str]:
    """A non-block label used by two separate runs of rows (T5's encoder and decoder final norms) gets the
    first part of its rows' names in front (``encoder final norm``)."""
    runs: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if not inside[i] and (i == 0 or labels[i - 1] != label):
            runs.setdefault(label, []).append(i)
    out = list(labels)
    for label, starts in runs.items():
        if len(starts) < 2:
            continue
        for i, label_i in enumerate(labels):
            if label_i == label and not inside[i]:
                prefix = names[i].split(".")[0]
                out[i] = f"{prefix} {label}" if prefix and prefix != label else label
    return out


def block_layout(
    names: Sequence[str], roles: Sequence[str] | None = None, kinds: Sequence[str] | None = None
) -> BlockLayout:
    """The grouping of rows ``names`` (data-flow order; ``roles`` and ``kinds`` as the probe or a run file gives
    them, guessed from the names where absent). Cached: the views call it at every frame."""
    names = tuple(str(n) for n in names)
    roles = tuple(roles) if roles is not None and len(roles) == len(names) else ("",) * len(names)
    kinds = tuple(kinds) if kinds is not None and len(kinds) == len(names) else ("",) * len(names)
    return _layout(names, roles, kinds)


def _find_block(name: str, names: Sequence[str] | None) -> tuple[str, str] | None:
    own = _own_name(name)
    pool = [_own_name(n) for n in names] if names is not None else []
    stacks = _stack_containers([*pool, own]) if pool else set()
    if not stacks:  # no sibling names: the first numbered part is the block
        parts = own.split(".")
        stacks = {".".join(parts[:i]) for i, p in enumerate(parts) if _NUMERIC.match(p)}
        stacks = set(sorted(stacks, key=len)[:1])
    return _block_of(own, stacks, _container_labels(stacks))


def block_key(name: str, names: Sequence[str] | None = None) -> str:
    """The qualified name of the block module ``name`` sits in (``transformer.h.3.attn`` -> ``transformer.h.3``),
    given the names of the model's parameter-owning modules (``names``: which containers are stacks of repeated
    blocks, as :mod:`.layout` decides; without them, the first numbered part). ``name`` itself outside every
    block."""
    found = _find_block(name, names)
    return found[0] if found is not None else _own_name(name)


def block_label(name: str, names: Sequence[str] | None = None) -> str:
    """The same block as :func:`block_key`, as the views name it (``h.3``; ``encoder.block.3`` next to a
    ``decoder.block``)."""
    found = _find_block(name, names)
    return found[1] if found is not None else _own_name(name)


def block_column(
    names: Sequence[str], roles: Sequence[str] | None = None, kinds: Sequence[str] | None = None
) -> list[str]:
    """Each row's block (``h.0``, ``embeddings``, ``final norm``, ``head``; a row's own name in a model without
    repeated blocks): the ``block`` column of ``Run.to_pandas()``."""
    layout = block_layout(names, roles, kinds)
    return list(layout.row_block)


def group_matrix(labels: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The distinct ``labels`` in first-seen order and each row's group index into them."""
    order: dict[str, int] = {}
    index = np.asarray([order.setdefault(label, len(order)) for label in labels], dtype=np.int64)
    return tuple(order), index


@dataclass(frozen=True)
class BlockStats(GradientStats):
    """A :class:`GradientStats` whose rows are groups of the probe's rows (see the module docstring for how a
    group's numbers pool its members'). ``members`` names each group's rows; ``group_of[i]`` is the group of row
    ``i`` of the original stats; ``level`` is one of :data:`LEVELS`."""

    members: tuple[tuple[str, ...], ...] = ()
    group_of: np.ndarray | None = None
    level: str = "blocks"


def _pooled_norm(values: np.ndarray, group_of: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        squares = np.square(values)
    return np.sqrt(np.bincount(group_of, weights=squares, minlength=n))


def _group_max(values: np.ndarray, group_of: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    for g in range(n):
        members = values[group_of == g]
        finite = members[~np.isnan(members)]
        out[g] = float(finite.max()) if len(finite) else math.nan
    return out


def _group_any(mask: np.ndarray | None, group_of: np.ndarray, n: int) -> np.ndarray | None:
    if mask is None:
        return None
    return np.bincount(group_of, weights=np.asarray(mask, dtype=np.float64), minlength=n) > 0


def group_stats(stats: GradientStats, level: str = "blocks") -> GradientStats:
    """``stats`` with a row per group at ``level``; ``stats`` itself at ``"rows"`` or for a model without
    repeated blocks. Raises ``ValueError`` for an unknown level."""
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {', '.join(LEVELS)}, got {level!r}")
    layout = block_layout(stats.names, stats.roles, stats.kinds)
    if level == "rows" or not layout.repeated:
        return stats
    labels, group_of = group_matrix(layout.labels(level))
    n = len(labels)
    grad = np.asarray(stats.grad_norm, dtype=np.float64)
    weight = np.asarray(stats.weight_norm, dtype=np.float64)
    counts = np.asarray(stats.param_count, dtype=np.float64)
    members = tuple(tuple(stats.names[i] for i in np.flatnonzero(group_of == g)) for g in range(n))
    weight_pooled = _pooled_norm(weight, group_of, n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        moved = _pooled_norm(np.asarray(stats.update_ratio, dtype=np.float64) * weight, group_of, n)
        update = moved / weight_pooled
        mean_abs = np.bincount(
            group_of, weights=np.asarray(stats.grad_mean_abs, dtype=np.float64) * counts, minlength=n
        ) / np.bincount(group_of, weights=counts, minlength=n)
    roles, kinds, blocks = [], [], []
    body = list(dict.fromkeys(b for b, inside in zip(layout.row_block, layout.in_block, strict=True) if inside))
    for g in range(n):
        rows = np.flatnonzero(group_of == g)
        first = int(rows[0])
        inside = layout.in_block[first]
        part_kinds = {layout.row_part[i] for i in rows}
        if inside:
            roles.append("norm" if part_kinds == {"norm"} else "hidden")
            kinds.append(layout.row_part[first] if level == "kinds" else "block")
            blocks.append(body.index(layout.row_block[first]))
        else:
            member_roles = {stats.roles[i] for i in rows}
            stem = layout.row_block[first] == "stem"
            roles.append("embedding" if stem else member_roles.pop() if len(member_roles) == 1 else "hidden")
            member_kinds = {stats.kinds[i] for i in rows}
            kinds.append(member_kinds.pop() if len(member_kinds) == 1 else "mixed")
            blocks.append(-1)
    aliases = tuple(
        ", ".join(a for i in np.flatnonzero(group_of == g) if (a := _alias(stats, int(i)))) for g in range(n)
    )
    values: dict[str, Any] = {f.name: getattr(stats, f.name) for f in dataclasses.fields(GradientStats)}
    values.update(
        names=labels,
        kinds=tuple(kinds),
        roles=tuple(roles),
        blocks=np.asarray(blocks, dtype=np.int64),
        grad_norm=_pooled_norm(grad, group_of, n),
        grad_mean_abs=mean_abs,
        grad_max_abs=_group_max(np.asarray(stats.grad_max_abs, dtype=np.float64), group_of, n),
        weight_norm=weight_pooled,
        update_ratio=update,
        drift=_group_max(np.asarray(stats.drift, dtype=np.float64), group_of, n),
        frozen=np.asarray([bool(np.all(stats.frozen[group_of == g])) for g in range(n)]),
        has_grad=_group_any(stats.has_grad, group_of, n),
        param_count=np.bincount(group_of, weights=counts, minlength=n),
        had_grad=_group_any(stats.had_grad, group_of, n),
        aliases=aliases,
        dead_fraction=(
            None if stats.dead_fraction is None else _group_max(np.asarray(stats.dead_fraction), group_of, n)
        ),
        accumulated=_group_any(stats.accumulated, group_of, n),
    )
    return BlockStats(**values, members=members, group_of=group_of, level=level)


def group_columns(values: np.ndarray, shown: Any) -> np.ndarray:
    """A ``[steps, rows]`` history of gradient norms pooled into the groups of ``shown`` (stats as the bars show
    them: a :class:`BlockStats` pools, any other stats leave ``values`` as they are): the heatmap's rows follow
    the bars' grouping. Each group is ``sqrt(sum of squares)`` of its rows at every step."""
    values = np.asarray(values, dtype=np.float64)
    group_of = getattr(shown, "group_of", None)
    if group_of is None or values.ndim != 2 or values.shape[1] != len(group_of):
        return values
    n = len(shown.names)
    out = np.zeros((values.shape[0], n))
    with np.errstate(over="ignore", invalid="ignore"):
        np.add.at(out.T, group_of, np.square(values).T)
    return np.sqrt(out)


def _alias(stats: GradientStats, i: int) -> str:
    return stats.aliases[i] if i < len(stats.aliases) else ""
