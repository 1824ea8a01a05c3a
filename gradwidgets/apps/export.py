"""Save what the apps show: their history as a run file (open it with ``gw.load_run`` or ``gradwidgets watch``),
as CSV (one row per step and layer), and their bars as PNG.

The PNG is drawn by the browser (bqplot renders the SVG there): :func:`save_png` asks the front end for the
image and writes the file when it arrives, so it needs a displayed figure and a kernel free to receive the
answer (not a cell that is still looping).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import bqplot as bq

from ..core.diagnosis import diagnose
from ..core.history import LAYER_FIELDS, History
from ..core.runfile import SUFFIX, RunRecord, RunWriter, split_stats
from ..core.stats import GradientStats
from .frames import replay_stats

__all__ = [
    "history_rows",
    "save_png",
    "slug",
    "write_csv",
    "write_history_run",
    "write_stats_run",
]

logger = logging.getLogger(__name__)


def slug(label: str) -> str:
    """A file-name-safe form of a run label (``"relu, skip"`` -> ``"relu-skip"``)."""
    text = re.sub(r"[^A-Za-z0-9._=-]+", "-", label).strip("-.")
    return text or "run"


def _history_records(history: History, latest: GradientStats, config: Any = None) -> Iterator[RunRecord]:
    """Every step the history holds, as run-file records (weight norms and drift are not kept there: NaN)."""
    held = len(history)
    for index in range(held):
        stats = replay_stats(latest, history.at(index))
        yield RunRecord.from_stats(stats, diagnose(stats, config=config), [stats.step], [stats.loss])


def write_history_run(
    path: str | os.PathLike[str], history: History, latest: GradientStats, meta: Mapping[str, Any] | None = None,
    config: Any = None,
) -> Path:
    """A run file of every step a session's :class:`History` holds (the caller holds the session's lock)."""
    layout, _, _ = split_stats(latest)
    path = Path(path)
    with RunWriter(path, keep_recent=max(10, len(history)), meta=meta) as writer:
        writer.write_header(layout)
        for record in _history_records(history, latest, config):
            writer.append(record)
    return path


def write_stats_run(
    path: str | os.PathLike[str],
    readings: Sequence[GradientStats],
    loss_steps: Sequence[float] = (),
    losses: Sequence[float] = (),
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """A run file of some readings (e.g. a monitor's latest) with a loss curve attached to the last one."""
    if not readings:
        raise ValueError("nothing to save yet: no gradients were read")
    path = Path(path)
    layout, _, _ = split_stats(readings[-1])
    with RunWriter(path, meta=meta) as writer:
        writer.write_header(layout)
        for index, stats in enumerate(readings):
            last = index == len(readings) - 1
            writer.append(
                RunRecord.from_stats(stats, diagnose(stats), loss_steps if last else (), losses if last else ())
            )
    return path


def history_rows(history: History, names: Sequence[str], extra: Mapping[str, Any] | None = None) -> Iterator[dict]:
    """One dict per (step, layer): ``step``, ``layer_index``, ``layer``, the history's per-layer fields, ``loss``."""
    steps, loss = history.steps, history.loss
    fields = {name: history.layer(name) for name in LAYER_FIELDS}
    for row, step in enumerate(steps):
        for index, name in enumerate(names):
            yield {
                **dict(extra or {}),
                "step": int(step),
                "layer_index": index,
                "layer": name,
                **{field: float(values[row, index]) for field, values in fields.items()},
                "loss": float(loss[row]),
            }


def stats_rows(stats: GradientStats, extra: Mapping[str, Any] | None = None) -> Iterator[dict]:
    """One dict per layer of a single reading (every per-layer array field of the stats)."""
    _, _, arrays = split_stats(stats)
    per_layer = {k: v for k, v in arrays.items() if v.ndim == 1 and len(v) == len(stats.names)}
    for index, name in enumerate(stats.names):
        yield {
            **dict(extra or {}),
            "step": stats.step,
            "layer_index": index,
            "layer": name,
            "kind": stats.kinds[index],
            "role": stats.roles[index],
            **{k: v[index].item() for k, v in per_layer.items()},
            "loss": stats.loss,
        }


def write_csv(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows (dicts with the same keys) as CSV; the header is the first row's keys."""
    path = Path(path)
    iterator = iter(rows)
    first = next(iterator, None)
    with open(path, "w", newline="") as handle:
        if first is None:
            return path
        writer = csv.DictWriter(handle, fieldnames=list(first))
        writer.writeheader()
        writer.writerow(first)
        writer.writerows(iterator)
    return path


def save_png(
    figure: bq.Figure, path: str | os.PathLike[str], scale: float | None = None,
    on_saved: Callable[[Path], None] | None = None,
) -> Path:
    """Ask the browser for ``figure`` as PNG and write it to ``path`` when it arrives (returns ``path`` at once)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist (for {path.name})")

    def received(data: Any) -> None:
        try:
            path.write_bytes(bytes(data))
            if on_saved is not None:
                on_saved(path)
        except Exception:  # noqa: BLE001 - a comm callback: log, never lose it
            logger.exception("could not write %s", path)

    figure.get_png_data(received, scale=scale)
    return path


def run_paths(folder: str | os.PathLike[str], labels: Sequence[str]) -> list[Path]:
    """One ``<label>.gwrun`` per run in ``folder`` (created if missing), names made unique."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for label in labels:
        candidate = folder / f"{slug(label)}{SUFFIX}"
        n = 2
        while candidate in out:
            candidate = folder / f"{slug(label)}-{n}{SUFFIX}"
            n += 1
        out.append(candidate)
    return out
