"""``GradientLogger``: the monitor's probe and verdicts for scripts and cluster jobs, appended to a run file.

::

    logger = gw.GradientLogger(model, "run.gwrun")          # DDP, FSDP2 or torch.compile'd models too
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / accumulation
        loss.backward()
        if (step + 1) % accumulation == 0:
            logger.log(loss, scaler=scaler)    # after the last micro-batch's backward, before step()/zero_grad()
            scaler.step(optimizer); scaler.update(); optimizer.zero_grad()
    logger.close()

**Where to call** :meth:`GradientLogger.log`: once per *optimizer step*, after the last ``backward()`` of a
gradient-accumulation cycle and before ``optimizer.step()`` and ``zero_grad()``. Called per micro-batch it would
measure partial sums (and, under DDP's ``no_sync``, rank-local gradients). With a ``GradScaler``, pass it
(``scaler=``) when the gradients are still scaled; after ``scaler.unscale_(optimizer)`` do not.

**Cost**: a call that does not log (``every`` = 10 by default: the first call and every 10th) keeps a detached
reference to the loss and returns. A call that logs reads the probe (one batched norm over all gradients), turns
the losses kept since the previous log into numbers with one transfer, forms the verdict and appends one record
(one ``write()``). Nothing synchronises the device between logged steps.

**Distributed**: every rank calls ``log()`` at the same steps; only rank 0 writes. See
:mod:`gradwidgets.core.distributed` for why DDP and FSDP2 numbers equal a single process's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .diagnosis import Diagnosis, diagnose
from .distributed import ShardedReader, clean_name, is_compiled, is_sharded, rank, unwrap, world_size
from .optimizer_reads import StepReads
from .probe import GradientProbe, GradientStats
from .runfile import DEFAULT_KEEP_RECENT, RunWriter, split_stats

__all__ = ["DEFAULT_EVERY", "GradientLogger", "verdict_record"]

logger = logging.getLogger(__name__)

DEFAULT_EVERY = 10
"""Log the first call and every 10th: the logger's cost stays a fraction of a percent of a step."""


def verdict_record(diagnosis: Diagnosis) -> dict[str, Any]:
    """A verdict as stored in a run file."""
    ratio = float(diagnosis.ratio)
    return {
        "kind": diagnosis.kind,
        "headline": diagnosis.headline,
        "message": diagnosis.message,
        "fix": diagnosis.fix,
        "ratio": ratio,
        "layers": list(diagnosis.layers),
    }


def _scale_of(scaler: Any) -> float:
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return float(scaler.get_scale())


class GradientLogger:
    """Record a model's per-layer gradient statistics and verdicts to a run file while a script trains it.

    ``model`` is any ``nn.Module``, also wrapped (DDP, ``torch.compile``) or sharded (FSDP2 ``fully_shard``).
    ``every``: log the first call and every ``every``-th call. ``mode``: ``"w"`` starts the file afresh, ``"a"``
    continues it (a resumed job). ``keep_recent``: records kept at full resolution; older ones are thinned, so
    the file holds at most ``3 * keep_recent`` records. ``meta``: JSON-able facts about the run (config,
    hyperparameters) stored in the header. ``detail_every``/``track_weights`` as for :class:`GradientProbe`.

    Only rank 0 opens the file; on the other ranks :attr:`path` is still set and :attr:`writes` is False.
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | os.PathLike[str],
        *,
        every: int = DEFAULT_EVERY,
        mode: str = "w",
        keep_recent: int = DEFAULT_KEEP_RECENT,
        meta: Mapping[str, Any] | None = None,
        detail_every: int = 20,
        track_weights: bool = True,
        optimizer: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 1_000_000:
            raise ValueError(f"every must be an integer in [1, 1000000], got {every!r}")
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
        self.model = unwrap(model)
        self.path = os.fspath(path)
        self.every = every
        self.rank = rank()
        self.world_size = world_size()
        self.writes = self.rank == 0
        self.sharded = is_sharded(self.model)
        self.calls = 0
        self.records = 0
        self.stats: GradientStats | None = None
        self.diagnosis: Diagnosis | None = None
        self._pending: list[tuple[int, Any]] = []
        self._reader: Any = None
        if self.sharded:
            self._reader = ShardedReader(self.model, detail_every=detail_every, record_flow=not is_compiled(model))
        elif self.writes:
            self._reader = GradientProbe(
                self.model, track_weights=track_weights, detail_every=detail_every, record_flow=not is_compiled(model)
            )
        self._writer: RunWriter | None = None
        if self.writes:
            info = {
                "model": type(self.model).__name__,
                "world_size": self.world_size,
                "sharded": self.sharded,
                "every": every,
                "pid": os.getpid(),
            }
            self._writer = RunWriter(path, mode=mode, keep_recent=keep_recent, meta={**info, **dict(meta or {})})
        # With the optimizer known, a logged step is read right before optimizer.step() (complete gradients
        # wherever zero_grad() sits); log(loss) then counts the step and keeps its loss.
        self.optimizer = optimizer
        self._optimizer_steps = 0
        self._step_reads = StepReads(optimizer, self._read_at_step) if optimizer is not None else None

    # ------------------------------------------------------------------ the training loop's call

    def log(self, loss: Any = None, step: int | None = None, scaler: Any = None) -> GradientStats | None:
        """Count one optimizer step; on a logged one, read the gradients and append a record.

        Returns the stats on a logged step (on rank 0, and on every rank of a sharded model), else ``None``.
        ``step`` defaults to the number of calls; ``scaler`` is a ``torch.amp.GradScaler`` whose scale still
        multiplies the gradients.
        """
        if self._writer is None and self.writes:
            raise RuntimeError(f"GradientLogger for {self.path} is closed")
        self.calls += 1
        step = self.calls if step is None else int(step)
        if self.writes and loss is not None:
            self._pending.append((step, loss.detach() if isinstance(loss, torch.Tensor) else loss))
        if self._step_reads is not None or not (self.calls == 1 or self.calls % self.every == 0):
            return None
        return self._record(step, scaler)

    def _read_at_step(self) -> None:
        """optimizer.step() is about to run (a step pre-hook): read and record a due step now."""
        self._optimizer_steps += 1
        steps = self._optimizer_steps
        if (steps == 1 or steps % self.every == 0) and (self._writer is not None or not self.writes):
            self._record(steps, None)  # GradScaler.step() unscales before it calls optimizer.step()

    def _record(self, step: int, scaler: Any) -> GradientStats | None:
        if self._reader is None:
            return None  # a DDP rank other than 0: rank 0 has the same (all-reduced) gradients
        loss_steps, losses = self._collect_losses()
        last_loss = float(losses[-1]) if len(losses) and loss_steps[-1] == step else None
        stats = self._reader.read(last_loss, step=step, scaler=scaler)
        self.stats = stats
        if not self.writes:
            return stats
        self.diagnosis = diagnose(
            stats, steps=self.records + 1, config=getattr(self.model, "config", None), optimizer=self.optimizer
        )
        self._append(stats, self.diagnosis, loss_steps, losses, scaler)
        return stats

    def _collect_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """The losses since the previous log, as numbers, with one device transfer."""
        if not self._pending:
            return np.zeros(0, np.int64), np.zeros(0)
        steps, values = zip(*self._pending, strict=True)
        self._pending.clear()
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if len(tensors) == len(values):
            numbers = torch.stack([t.reshape(()).float() for t in tensors]).double().cpu().numpy()
        else:
            numbers = np.array([float(v) for v in values], dtype=np.float64)
        return np.asarray(steps, dtype=np.int64), numbers

    def _append(
        self, stats: GradientStats, diagnosis: Diagnosis, loss_steps: np.ndarray, losses: np.ndarray, scaler: Any
    ) -> None:
        assert self._writer is not None
        layout, scalars, arrays = split_stats(stats)
        if self.records == 0:
            layout["names"] = [clean_name(n) for n in layout["names"]]
            self._writer.write_header(layout)
        record: dict[str, Any] = {
            "step": stats.step,
            "time": time.time(),
            "scalars": scalars,
            "arrays": arrays,
            "verdict": verdict_record(diagnosis),
            "loss_steps": loss_steps,
            "losses": losses,
        }
        if scaler is not None and scaler.is_enabled():
            grads = stats.grad_norm[stats.has_grad]
            record["scale"] = _scale_of(scaler)
            # GradScaler skips an optimizer step whose scaled gradients hold inf/NaN: not a diverged run.
            record["skipped"] = bool(not np.isfinite(grads).all())
        self._writer.append(record)
        self.records += 1

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._writer is None

    def close(self) -> None:
        """Close the file and release its lock (also done by a ``with`` block, and by the OS if the process dies)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        step_reads = getattr(self, "_step_reads", None)
        if step_reads is not None:
            step_reads.remove()

    def __enter__(self) -> GradientLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "writer" if self.writes else f"rank {self.rank} (rank 0 writes)"
        return f"<GradientLogger {self.path} {role}, every {self.every}, {self.records} records>"
