"""``Run``: a recorded run in memory (columns per field, verdicts, losses), and :func:`load_run`."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..blocks import block_column
from ..diagnosis import Diagnosis
from ..signals import InstabilityReading
from ..stats import GradientStats, make_stats
from .format import FORMAT_VERSION, SUFFIX, RunFileError
from .reader import RunReader
from .record import RunRecord

__all__ = ["Run", "find_runs", "iter_records", "load_run"]


class Run:
    """A recorded run, in memory: ``names``, ``steps``, per-layer fields, losses and verdicts.

    ``run.grad_norm`` (and every other recorded per-layer field, ``run.field(name)``) is a ``[records, layers]``
    array, oldest first; ``run.steps`` the step of each record; ``run.loss`` the loss at each record;
    ``run.loss_steps``/``run.losses`` every loss logged (also between records); ``run.verdicts`` the verdict at
    each record (``kind``, ``message``, ``fix``, ``ratio``, ``layers``); ``run.signals`` the instability readings
    (``run.signals_to_pandas()`` as a table); ``run.stats(i)`` a ``GradientStats`` of
    record ``i`` (for :func:`gradwidgets.diagnose` and the views). Records grow with :meth:`extend` (the viewer
    follows a file that way).
    """

    def __init__(self, header: Mapping[str, Any], path: Path | None = None, version: int = FORMAT_VERSION) -> None:
        self.path = path
        self.version = version
        self.header = dict(header)
        self.names: tuple[str, ...] = tuple(header["names"])
        self.kinds: tuple[str, ...] = tuple(header.get("kinds", ["?"] * len(self.names)))
        self.roles: tuple[str, ...] = tuple(header.get("roles", ["hidden"] * len(self.names)))
        self.blocks = np.asarray(header.get("blocks", range(len(self.names))), dtype=np.int64)
        self.param_count = np.asarray(header.get("param_count", [np.nan] * len(self.names)), dtype=np.float64)
        self.aliases: tuple[str, ...] = tuple(header.get("aliases", [""] * len(self.names)))
        self.meta: dict[str, Any] = dict(header.get("meta", {}))
        self.damage: list[int] = []
        """Byte offsets of damage skipped when the file was loaded with ``salvage=True``."""
        self.finished = False
        """The writer closed the file (it ends with an end record)."""
        self._records: list[RunRecord] = []
        self._tail: list[RunRecord] = []
        self._cache: dict[str, np.ndarray] = {}

    # -------------------------------------------------------------- building

    def extend(self, records: Sequence[RunRecord]) -> None:
        """Add records as read; a losses-only record (written by ``close()``) adds losses, not a record."""
        for record in records:
            if record.losses_only:
                self._tail.append(record)
            else:
                self._records.append(record)
        if records:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[RunRecord]:
        return self._records

    def __repr__(self) -> str:
        span = f"steps {self.steps[0]}-{self.steps[-1]}" if len(self) else "no steps yet"
        return f"<Run {self.path or ''} {len(self.names)} layers, {len(self)} records, {span}>"

    # -------------------------------------------------------------- columns

    def _column(self, key: str, build: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def steps(self) -> np.ndarray:
        return self._column("steps", lambda: np.array([r.step for r in self._records], dtype=np.int64))

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the recorded array fields (``grad_norm``, ``update_ratio``, ...)."""
        names: dict[str, None] = {}
        for record in self._records[-1:] + self._records[:1]:
            names.update(dict.fromkeys(record.arrays))
        return tuple(names)

    def field(self, name: str) -> np.ndarray:
        """``[records, ...]`` array of one recorded field (NaN where a record lacks it)."""
        if name not in self.fields:
            raise ValueError(f"field must be one of {list(self.fields)}, got {name!r}")

        def build() -> np.ndarray:
            values = [r.arrays.get(name) for r in self._records]
            shapes = {v.shape for v in values if v is not None}
            if len(shapes) != 1:
                width = max((v.size for v in values if v is not None), default=0)
                out = np.full((len(values), width), np.nan)
                for i, v in enumerate(values):
                    if v is not None:
                        out[i, : v.size] = v.ravel()
                return out
            shape = shapes.pop()
            dtype = next(v.dtype for v in values if v is not None)
            fill = np.nan if dtype.kind == "f" else 0
            return np.stack([v if v is not None else np.full(shape, fill, dtype) for v in values])

        return self._column(f"field:{name}", build)

    def __getattr__(self, name: str) -> Any:
        # run.grad_norm, run.update_ratio, ...: every recorded array field as an attribute.
        if name.startswith("_") or name in ("header", "names"):
            raise AttributeError(name)
        if name in self.fields:
            return self.field(name)
        raise AttributeError(f"'Run' has no attribute {name!r} (recorded fields: {list(self.fields)})")

    def scalar(self, name: str) -> np.ndarray:
        """One recorded scalar per record (``loss``, ``detail_step``, ...); NaN where missing."""
        values = [r.scalars.get(name) for r in self._records]
        if any(isinstance(v, str) for v in values):
            return np.asarray(values, dtype=object)
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    @property
    def loss(self) -> np.ndarray:
        return self._column("loss", lambda: self.scalar("loss"))

    @property
    def loss_steps(self) -> np.ndarray:
        return self._column("loss_steps", lambda: self._all_losses()[0])

    @property
    def losses(self) -> np.ndarray:
        return self._column("losses", lambda: self._all_losses()[1])

    def _all_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """Every loss logged, in step order (a closed-then-resumed run's tail losses sit between records)."""
        parts = self._records + self._tail
        steps = np.concatenate([np.zeros(0)] + [r.loss_steps for r in parts])
        losses = np.concatenate([np.zeros(0)] + [r.losses for r in parts])
        order = np.argsort(steps, kind="stable")
        return steps[order], losses[order]

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return [dict(r.verdict.to_dict() if r.verdict else {}, step=r.step) for r in self._records]

    def diagnosis(self, index: int = -1) -> Diagnosis | None:
        """The verdict recorded with record ``index`` (None when none was, or damage lost it)."""
        return self._records[index].verdict

    @property
    def skipped(self) -> np.ndarray:
        """Steps a GradScaler skipped: ``GradientStats.skipped`` of each record (the probe's rule, stored once)."""
        return np.array([r.skipped for r in self._records], dtype=bool)

    @property
    def dropped(self) -> int:
        """Records the writer could not write (I/O errors), as far as the file says."""
        return max((r.dropped for r in self._records), default=0)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Each row's block (``h.0``, ``embeddings`` ...; :func:`~gradwidgets.core.blocks.block_column`)."""
        return tuple(block_column(self.names, self.roles, self.kinds))

    @property
    def times(self) -> np.ndarray:
        return np.array([r.time for r in self._records], dtype=np.float64)

    def index_of(self, step: int) -> int:
        """The record at ``step``, or the last one before it (0 if ``step`` precedes them all)."""
        return max(int(np.searchsorted(self.steps, step, side="right")) - 1, 0)

    def stats(self, index: int = -1) -> GradientStats:
        """Record ``index`` as a ``GradientStats`` (fields this file lacks are NaN, unknown ones are dropped)."""
        record = self._records[index]
        n = len(self.names)
        values: dict[str, Any] = {
            "names": self.names,
            "kinds": self.kinds,
            "roles": self.roles,
            "blocks": self.blocks,
            "param_count": self.param_count,
            "aliases": self.aliases,
        }
        known = {f.name for f in dataclasses.fields(GradientStats)}
        for name, value in record.scalars.items():
            if name in known:
                values[name] = value
        for name, value in record.arrays.items():
            if name in known:
                values[name] = value.copy()
        values["step"] = int(record.step)
        if "loss" in values and values["loss"] is None:
            values["loss"] = math.nan
        return make_stats(values, n)

    @property
    def signals(self) -> list[InstabilityReading]:
        """Every instability reading recorded (per attention block: largest attention logit, entropy, update
        ratio, gradient RMS; the output's log Z), oldest first; empty for a run recorded without them."""
        return [reading for record in self._records for reading in record.signals]

    def signals_to_pandas(self) -> Any:
        """The instability readings as a table: one row per (step, block) with ``max_logit``, ``entropy``,
        ``update_ratio``, ``grad_rms``, ``momentum_cos``, and the step's ``log_z``, ``log_z_max``, ``eps``, ``lr``
        and ``lr_ahead`` (the columns are :class:`InstabilityReading`'s fields). Needs pandas."""
        try:
            import pandas as pd
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("Run.signals_to_pandas() needs pandas: pip install pandas") from error
        rows: dict[str, list[Any]] = {name: [] for name in ("step", "block", *InstabilityReading.PER_BLOCK,
                                                             *InstabilityReading.SCALARS)}
        for reading in self.signals:
            n = len(reading.blocks)
            rows["step"] += [reading.step] * n
            rows["block"] += list(reading.blocks)
            for name in InstabilityReading.PER_BLOCK:
                rows[name] += np.asarray(getattr(reading, name), dtype=float).tolist()
            for name in InstabilityReading.SCALARS:
                rows[name] += [float(getattr(reading, name))] * n
        return pd.DataFrame(rows)

    def to_pandas(self) -> Any:
        """One row per (step, layer): step, layer index and name, kind, role, ``block`` (the block the row belongs
        to as the blocks view names it: ``h.0``, ``embeddings``, ``final norm``, ``head``; the row's own name in a
        model without repeated blocks; derived from the names, so older files have it too), ``block_index`` (the
        body block's depth index the verdict compares, -1 outside the body), every recorded per-layer field, the
        loss and verdict at that step. Needs pandas (an optional dependency)."""
        try:
            import pandas as pd
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("Run.to_pandas() needs pandas: pip install pandas") from error
        n, records = len(self.names), len(self)
        columns: dict[str, Any] = {
            "step": np.repeat(self.steps, n),
            "layer_index": np.tile(np.arange(n), records),
            "layer": np.tile(np.asarray(self.names, dtype=object), records),
            "kind": np.tile(np.asarray(self.kinds, dtype=object), records),
            "role": np.tile(np.asarray(self.roles, dtype=object), records),
            "block": np.tile(np.asarray(self.block_names, dtype=object), records),
            "block_index": np.tile(self.blocks, records),
        }
        for name in self.fields:
            values = self.field(name)
            if values.ndim == 2 and values.shape[1] == n:
                columns[name] = values.reshape(-1)
        columns["loss"] = np.repeat(self.loss, n) if records else np.zeros(0)
        columns["verdict"] = np.repeat(np.asarray([v.get("kind") for v in self.verdicts], dtype=object), n)
        return pd.DataFrame(columns)


def load_run(path: str | os.PathLike[str], salvage: bool = False) -> Run:
    """Read a run file (also one still being written: up to its last whole record).

    Damage raises :class:`RunFileError` naming the byte offset; ``salvage=True`` instead recovers every intact
    record after it too (``run.damage`` lists where records were lost)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no run file at {path}")
    with RunReader(path, salvage=salvage) as reader:
        records, _ = reader.poll()
        if reader.header is None:
            if reader.damage:
                raise RunFileError(f"{path} is damaged at byte {reader.damage[0]} and no header survived it")
            raise RunFileError(f"{path} holds no steps yet (the logger writes its header at the first log())")
        run = Run(reader.header, path=path, version=reader.version or FORMAT_VERSION)
        run.extend(records)
        run.damage = list(reader.damage)
        run.finished = reader.finished
    return run


def find_runs(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself if it is a file, else the ``*.gwrun`` files in that folder, oldest first."""
    path = Path(path)
    if path.is_dir():
        return sorted(path.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
    return [path]


def iter_records(path: str | os.PathLike[str], salvage: bool = False) -> Iterator[RunRecord]:
    """Every whole record of a file (for tools that stream instead of loading a :class:`Run`)."""
    with RunReader(path, salvage=salvage) as reader:
        records, _ = reader.poll()
        yield from records
