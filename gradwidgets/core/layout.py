"""Which rows the probe shows, in which order, and which of them form the repeated stack the verdict compares.

A row is a module that directly owns parameters, except that

* a ``Parameter`` shared by several modules (tied embedding/head) belongs to one row only, the first one the
  data reaches; the other modules are listed as that row's aliases (so it is counted once and never compared
  with itself), and
* ``nn.RNN/LSTM/GRU`` with several layers (or both directions) give a row per layer, ``rnn.l0``,
  ``rnn.l0_reverse``, ``rnn.l1``, ... from their ``weight_ih_l{k}[_reverse]`` parameters.

Rows follow the order of the first forward pass (:class:`FlowRecorder`), registration order before one ran.
:class:`RowMap` is the one answer to "which parameter belongs to which row, in which order, with which aliases":
:class:`~gradwidgets.core.probe.GradientProbe` (one process) and
:class:`~gradwidgets.core.distributed.ShardedReader` (FSDP2 shards) both read through it, and
:class:`FlowOrder` tells both when the first forward pass has given the order.
For models that do not declare a layout (``layer_roles``/``layer_blocks``, as :mod:`gradwidgets.nets` do), the
*body* is the repeated blocks: modules under a numbered child of a container (``layers.3``, ``transformer.h.5``,
``layer2.1``) that hold more than one row, or the layers of a stacked RNN. Embeddings, norms, the stem before and
the head after them stay out of the ratio. A model with no such blocks compares its first and last hidden layer
(the last ``hidden`` row counts as the head when there are at least three).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = [
    "FlowOrder",
    "FlowRecorder",
    "ReadsRows",
    "Row",
    "RowMap",
    "build_rows",
    "flow_from_names",
    "flow_to_names",
    "module_kind",
    "parameter_identity",
    "registrations",
]

_NUMERIC = re.compile(r"^\d+$")
_WRAPPERS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})
"""Name segments that wrappers insert (``torch.compile``, FSDP1, activation checkpointing): never part of a row's
name, so a compiled model's rows read as the model's own (``blocks.0.attn``, not ``_orig_mod.blocks.0.attn``)."""
_RNN_LAYER = re.compile(r"_l(\d+)(_reverse)?$")


@dataclass
class Row:
    """One bar: ``params`` are the parameters it owns (each Parameter in exactly one row)."""

    name: str
    module: nn.Module
    params: list[nn.Parameter]
    role: str = "hidden"
    block: int = -1
    key: str = ""
    composite: bool = False
    aliases: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return module_kind(self.module)


def module_kind(module: nn.Module) -> str:
    """The module's own class name: FSDP2's ``fully_shard`` (and composable ``replicate``) swap in a class of
    their own (``FSDPLinear`` over ``Linear``), which a run's rows should not show."""
    for cls in type(module).__mro__:
        if not cls.__module__.startswith("torch.distributed."):
            return cls.__name__
    return type(module).__name__


class _Registrations:
    """How many parameters/modules have been assigned to any module since import (a global counter bumped by
    torch's module-registration hooks): while it does not move, no model can have gained or swapped a
    parameter through ``setattr``/``register_parameter``, so the probe skips its identity walk."""

    count = 0
    installed = False

    @classmethod
    def install(cls) -> None:
        if cls.installed:
            return
        from torch.nn.modules import module as module_api

        def bump(*args: object) -> None:
            cls.count += 1

        module_api.register_module_parameter_registration_hook(bump)
        module_api.register_module_module_registration_hook(bump)
        cls.installed = True


def registrations() -> int:
    """The global registration counter (see :class:`_Registrations`); installs its hooks on first use."""
    _Registrations.install()
    return _Registrations.count


def parameter_identity(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter slot of the model in a fixed walk order (shared ones repeated): compared by identity at
    each read to notice parameters added, replaced or removed since the layout was built. A hand-written walk,
    about 3x cheaper than ``model.parameters()`` (no names, no de-duplication)."""
    out: list[nn.Parameter] = []
    stack = [model]
    seen: set[int] = set()
    while stack:
        module = stack.pop()
        key = id(module)
        if key in seen:
            continue
        seen.add(key)
        out.extend(p for p in module._parameters.values() if p is not None)
        stack.extend(m for m in module._modules.values() if m is not None)
    return out


def _split_rnn(name: str, module: nn.RNNBase) -> list[tuple[str, list[nn.Parameter]]]:
    """One (row name, params) per layer and direction of a stacked/bidirectional RNN."""
    groups: dict[str, list[nn.Parameter]] = {}
    for pname, p in module.named_parameters(recurse=False):
        match = _RNN_LAYER.search(pname)
        suffix = f"l{match.group(1)}{match.group(2) or ''}" if match else "extra"
        groups.setdefault(suffix, []).append(p)
    prefix = f"{name}." if name else ""
    return [(prefix + suffix, params) for suffix, params in groups.items()]


def _own_name(name: str) -> str:
    """``_orig_mod.blocks.0`` -> ``blocks.0`` (see :data:`_WRAPPERS`)."""
    if "_" not in name:
        return name
    return ".".join(part for part in name.split(".") if part not in _WRAPPERS)


def _numeric_positions(name: str) -> list[int]:
    return [i for i, part in enumerate(name.split(".")) if _NUMERIC.match(part)]


def _stack_containers(names: list[str]) -> set[str]:
    """Containers (``layers``, ``transformer.h``, ``1.layers``) whose numbered children are repeated blocks: at
    least two of those children hold more than one row or a nested row. A ``Sequential`` whose numbered children
    are single layers (``0``, ``2``, ...) is no stack of blocks, nor is one that wraps a single sub-network."""
    rows_under: dict[tuple[str, str], list[str]] = {}
    for name in names:
        parts = name.split(".")
        for i in _numeric_positions(name):
            container, child = ".".join(parts[:i]), ".".join(parts[: i + 1])
            rows_under.setdefault((container, child), []).append(name)
    composite: dict[str, int] = {}
    for (container, child), members in rows_under.items():
        if len(members) > 1 or any(m != child for m in members):
            composite[container] = composite.get(container, 0) + 1
    return {container for container, count in composite.items() if count >= 2}


def _block_key(name: str, stacks: set[str]) -> str:
    """The numbered child of the outermost stack container the row sits in (``1.layers.3.linear1`` ->
    ``1.layers.3``); without one, the name up to its first numeric part."""
    parts = name.split(".") if name else [""]
    positions = _numeric_positions(name)
    cut = next((i for i in positions if ".".join(parts[:i]) in stacks), positions[0] if positions else len(parts) - 1)
    return ".".join(parts[: cut + 1])


def _generic_role(module: nn.Module) -> str:
    if "Norm" in module_kind(module):
        return "norm"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    return "hidden"


def build_rows(model: nn.Module, flow: dict[int, int] | None = None) -> list[Row]:
    """The rows of ``model`` (see the module docstring); ``flow`` maps ``id(module)`` to its position in the
    first forward pass (modules it did not reach go last, in registration order)."""
    flow = flow or {}
    modules = [(_own_name(name), module) for name, module in model.named_modules() if module._parameters]
    # A module the forward pass did not call (``MultiheadAttention.out_proj`` is used through its weight, an
    # unused branch) goes right after the module registered before it.
    position: dict[int, tuple[int, int, int]] = {}
    last = -1
    for i, (_, module) in enumerate(modules):
        seen = flow.get(id(module))
        if seen is not None:
            last = seen
        position[id(module)] = (last if seen is None else seen, 0 if seen is not None else 1, i)
    modules.sort(key=lambda item: position[id(item[1])])
    owner_of: dict[int, Row] = {}
    rows: list[Row] = []
    for name, module in modules:
        if isinstance(module, nn.RNNBase) and (module.num_layers > 1 or module.bidirectional):
            pieces = _split_rnn(name, module)
        else:
            pieces = [(name, [p for p in module._parameters.values() if p is not None])]
        for row_name, params in pieces:
            own = []
            for p in params:
                if id(p) in owner_of:
                    aliases = owner_of[id(p)].aliases
                    if row_name not in aliases:
                        aliases.append(row_name)
                else:
                    own.append(p)
            if not own:
                continue
            row = Row(row_name, module, own)
            for p in own:
                owner_of[id(p)] = row
            rows.append(row)

    declared_roles = getattr(model, "layer_roles", None) or {}
    if declared_roles:
        declared_blocks = getattr(model, "layer_blocks", None) or {}
        for row in rows:
            row.role = declared_roles.get(row.name, _generic_role(row.module))
            row.block = int(declared_blocks.get(row.name, -1))
        return rows
    _structure(rows)
    return rows


def _structure(rows: list[Row]) -> None:
    """Roles and body blocks for a model that declares none (rows are in data-flow order)."""
    stacks = _stack_containers([row.name for row in rows])
    for row in rows:
        row.role = _generic_role(row.module)
        if isinstance(row.module, nn.RNNBase) and _RNN_LAYER.search("_" + row.name.rsplit(".", 1)[-1]):
            row.key, row.composite = row.name.removesuffix("_reverse"), True
        else:
            row.key = _block_key(row.name, stacks)
    members: dict[str, list[Row]] = {}
    for row in rows:
        members.setdefault(row.key, []).append(row)
    body_keys = []
    for key, group in members.items():
        composite = any(r.composite or r.name != key for r in group)
        if composite and any(r.role == "hidden" for r in group):
            body_keys.append(key)
    if len(body_keys) >= 2:
        index = {key: i for i, key in enumerate(body_keys)}
        first_body = next(i for i, r in enumerate(rows) if r.key in index)
        for i, row in enumerate(rows):
            if row.key in index:
                row.block = index[row.key]
            elif row.role == "hidden" and i > first_body:
                row.role = "head"
        return
    hidden = [row for row in rows if row.role == "hidden"]
    if len(hidden) >= 3:
        hidden[-1].role = "head"
        hidden = hidden[:-1]
    for i, row in enumerate(hidden):
        row.block = i


class FlowRecorder:
    """Records the order in which the forward pass first calls each parameter-owning module, with forward
    pre-hooks that all remove themselves once the model's own forward has returned (or on :meth:`close`)."""

    def __init__(self, model: nn.Module, on_done: Callable[[], None] | None = None) -> None:
        self.order: dict[int, int] = {}
        self.done = False
        self._on_done = on_done
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for module in model.modules():
            if module._parameters:
                self._handles.append(module.register_forward_pre_hook(self._seen))
        self._handles.append(model.register_forward_hook(self._finished, always_call=True))

    def _seen(self, module: nn.Module, args: object) -> None:
        self.order.setdefault(id(module), len(self.order))

    def _finished(self, module: nn.Module, args: object, output: object) -> None:
        self.close()
        if self._on_done is not None and self.order:
            self._on_done()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.done = True


class ReadsRows:
    """What a reader built on a :class:`RowMap` (held as ``_map``) shows of it: the rows' names, kinds, roles,
    aliases and blocks, and the parameters it reads, always those of its current map."""

    _map: RowMap

    @property
    def names(self) -> tuple[str, ...]:
        return self._map.names

    @property
    def kinds(self) -> tuple[str, ...]:
        return self._map.kinds

    @property
    def roles(self) -> tuple[str, ...]:
        return self._map.roles

    @property
    def aliases(self) -> tuple[str, ...]:
        return self._map.aliases

    @property
    def blocks(self) -> np.ndarray:
        return self._map.blocks

    @property
    def _params(self) -> list[nn.Parameter]:
        return self._map.params


class RowMap:
    """The rows of a model and the row each parameter belongs to: what :class:`GradientProbe` and
    :class:`ShardedReader` both sum per-parameter numbers by, so the two give the same rows, in the same order,
    with the same aliases and the same parameters under each.

    ``params`` holds every parameter once (a shared one under the row that owns it), row after row; ``owner[i]``
    is the index of the row of ``params[i]``.
    """

    __slots__ = ("aliases", "blocks", "kinds", "names", "owner", "params", "roles", "rows")

    def __init__(self, rows: list[Row]) -> None:
        self.rows = tuple(rows)
        self.names = tuple(r.name for r in rows)
        self.kinds = tuple(r.kind for r in rows)
        self.roles = tuple(r.role for r in rows)
        self.aliases = tuple(", ".join(r.aliases) for r in rows)
        self.blocks = np.asarray([r.block for r in rows], dtype=np.int64)
        self.params: list[nn.Parameter] = [p for r in rows for p in r.params]
        self.owner = np.asarray([i for i, r in enumerate(rows) for _ in r.params], dtype=np.int64)

    @classmethod
    def of(cls, model: nn.Module, flow: dict[int, int] | None = None) -> RowMap:
        """The map of ``model``'s rows (:func:`build_rows`), in the order ``flow`` gives."""
        return cls(build_rows(model, flow))

    def __len__(self) -> int:
        return len(self.rows)

    def per_row(self, per_param: np.ndarray | list[float]) -> np.ndarray:
        """Per-parameter numbers summed per row (float64)."""
        return np.bincount(self.owner, weights=per_param, minlength=len(self.rows))

    def param_count(self) -> np.ndarray:
        """Elements per row (a shared parameter counted once, in its owner's row)."""
        return self.per_row([p.numel() for p in self.params]).astype(np.float64)


class FlowOrder:
    """The data-flow order for a model's rows: recorded during the first forward pass (by a :class:`FlowRecorder`)
    and handed out once, at the first :meth:`take` after it, so the reader rebuilds its :class:`RowMap` then.

    Nothing is recorded, and rows keep registration order, for ``record=False``, a ``torch.compile`` model (hooks
    that remove themselves would be traced into the graph) and models that declare their own layout
    (``layer_roles``, as :mod:`gradwidgets.nets` do: stable history columns).
    """

    def __init__(self, model: nn.Module, record: bool = True) -> None:
        compiled = isinstance(getattr(model, "_orig_mod", None), nn.Module)
        wanted = record and not compiled and not getattr(model, "layer_roles", None)
        self.order: dict[int, int] | None = None
        self._ready = False
        self._recorder = FlowRecorder(model, self._on_done) if wanted else None

    def _on_done(self) -> None:
        self._ready = True

    def take(self) -> dict[int, int] | None:
        """``{id(module): position}`` the first time the first forward pass's order is there; else None."""
        recorder = self._recorder
        if recorder is None:
            return None
        if not recorder.done and recorder.order:
            recorder.close()  # submodules ran but the model itself was never called: the forward is over anyway
            self._ready = True
        if not self._ready:
            return None
        self._ready = False
        if not recorder.order:
            return None
        self.order = dict(recorder.order)
        return self.order

    def close(self) -> None:
        """Remove the hooks still waiting for the first forward pass."""
        if self._recorder is not None:
            self._recorder.close()


def flow_to_names(model: nn.Module, flow: dict[int, int]) -> list[str]:
    """A recorded order as qualified module names (portable to another process holding the same model)."""
    named = [(flow[id(m)], name) for name, m in model.named_modules() if id(m) in flow]
    return [name for _, name in sorted(named)]


def flow_from_names(model: nn.Module, names: list[str]) -> dict[int, int]:
    """The inverse of :func:`flow_to_names` on this process's model (names it lacks are left out)."""
    modules = dict(model.named_modules())
    return {id(modules[name]): i for i, name in enumerate(names) if name in modules}
