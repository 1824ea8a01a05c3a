"""``GradientLogger``: the monitor's probe and verdicts for scripts and cluster jobs, appended to a run file.

::

    logger = gw.GradientLogger(model, "run.gwrun")          # DDP, FSDP2 or torch.compile'd models too
    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y) / accumulation
        loss.backward()
        if (step + 1) % accumulation == 0:
            logger.log(loss, loss_scale=accumulation, scaler=scaler)   # records the optimizer step's loss
            scaler.step(optimizer); scaler.update(); optimizer.zero_grad()
    logger.close()

**Where to call** :meth:`GradientLogger.log`: once per *optimizer step*, after the last ``backward()`` of a
gradient-accumulation cycle and before ``optimizer.step()`` and ``zero_grad()``. Called per micro-batch it would
measure partial sums (and, under DDP's ``no_sync``, rank-local gradients). With a ``GradScaler``, pass it
(``scaler=``) when the gradients are still scaled; after ``scaler.unscale_(optimizer)`` do not.

**Steps and losses**: steps are optimizer steps counted from 1 (the ``n``-th call is step ``n``; ``mode="a"``
goes on from the file's last step). The loss recorded for a step is the optimizer step's loss: pass the
micro-batch losses of an accumulated step as a list (their sum is recorded), or one loss and a ``loss_scale``
factor (``loss * loss_scale`` is recorded). Under DDP it is the mean over the ranks (one ``all_reduce`` on logged
steps only), so rank 0's numbers equal a single process on the global batch.

**Never in the way**: an I/O error while writing (a full disk) is logged once; the record is dropped and counted
(:attr:`GradientLogger.dropped`, stored in the file) and the file stays readable with every record before and
after it. ``close()`` writes the losses logged since the last record, and a record of the last step's gradients
when they are still there (not zeroed since), then marks the file finished.

**Cost**: a call that does not log (``every`` = 10 by default: the first call and every 10th) keeps a detached
reference to the loss and returns. A call that logs reads the probe (one batched norm over all gradients), turns
the losses kept since the previous log into numbers with one transfer, forms the verdict and appends one record
(one ``write()``). Nothing synchronises the device between logged steps.

**Distributed**: every rank calls ``log()`` at the same steps; only rank 0 writes. See
:mod:`gradwidgets.core.distributed` for why DDP and FSDP2 numbers equal a single process's.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..validation import check_limit
from .diagnosis import Diagnosis, diagnose
from .distributed import ShardedReader, clean_name, is_compiled, is_sharded, rank, unwrap, world_size
from .optimizer_reads import StepReads
from .probe import GradientProbe
from .runfile import DEFAULT_KEEP_RECENT, RunRecord, RunWriter, split_stats
from .signals import (
    InstabilityReading,
    InstabilitySignals,
    check_scheduler,
    has_attention,
    unstable_verdict,
    warn_unstable,
)
from .stats import GradientStats

__all__ = ["DEFAULT_EVERY", "GradientLogger"]

logger = logging.getLogger(__name__)

DEFAULT_EVERY = 10
"""Log the first call and every 10th: the logger's cost stays a fraction of a percent of a step."""
SIGNALS_SAMPLE = 4
"""Sequences of the batch the instability signals measure (benchmarks/instability/cost.py: ~1% of a step)."""


def _scale_of(scaler: Any) -> float:
    if scaler is None or not scaler.is_enabled():
        return 1.0
    return float(scaler.get_scale())


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world_size() > 1


def _step_loss(loss: Any, loss_scale: float) -> Any:
    """The optimizer step's loss, kept on its device (no sync): a list of micro-batch losses summed, times
    ``loss_scale``."""
    if isinstance(loss, (list, tuple)):
        if not loss:
            raise ValueError("loss must be a number, a tensor, or a non-empty list of micro-batch losses; got []")
        parts = [_step_loss(part, 1.0) for part in loss]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        loss = total
    elif isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(f"loss must be a scalar tensor, got shape {tuple(loss.shape)}")
        loss = loss.detach().reshape(())
    elif isinstance(loss, bool) or not isinstance(loss, (int, float, np.number)):
        raise ValueError(f"loss must be a number, a tensor, or a list of them, got {type(loss).__name__}")
    return loss * loss_scale if loss_scale != 1.0 else loss


class GradientLogger:
    """Record a model's per-layer gradient statistics and verdicts to a run file while a script trains it.

    ``model`` is any ``nn.Module``, also wrapped (DDP, ``torch.compile``) or sharded (FSDP2 ``fully_shard``).
    ``every``: log the first call and every ``every``-th call. ``mode``: ``"w"`` starts the file afresh, ``"a"``
    continues it (a resumed job: steps go on from the file's last one). ``keep_recent``: records kept at full
    resolution; older ones are thinned, so the file holds at most ``3 * keep_recent`` records. ``meta``: JSON-able
    facts about the run (config, hyperparameters) stored in the header. ``detail_every``/``track_weights`` as for
    :class:`GradientProbe`. ``signals``: measure the instability signals (largest attention logit and entropy per
    block, the output's log Z; with ``optimizer``, update ratio and gradient RMS per block) on the forward passes
    of logged steps and record them; ``None`` (default) turns them on when the model has an attention module
    :func:`~gradwidgets.core.signals.attention_kind` recognises. Their warning makes the verdict ``unstable``.
    ``scheduler``: the learning-rate scheduler (``torch.optim.lr_scheduler``) **stepped once per optimizer step**;
    each reading then has the learning-rate outlook (``lr_ahead``: the largest learning rate it will set over the
    next 100 steps, from a stepped copy; the real one is untouched), which turns on the edge warning: the run
    oscillating (gradient-momentum cosine <= -0.3) while the schedule is about to double its learning rate. The
    signals read the learning rate and the momentum from the scheduler's optimizer when ``optimizer`` is not given.
    Do not pass a scheduler stepped once per epoch: its "100 steps ahead" would be 100 epochs ahead.
    With an optimizer the signals' reading of a step completes at its ``optimizer.step()``: that step's record is
    written right after it (or at the next ``log()`` or ``close()`` if the step never comes), carrying the reading.

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
        signals: bool | None = None,
        scheduler: Any = None,
    ) -> None:
        if signals is not None and not isinstance(signals, bool):
            raise ValueError(f"signals must be True, False or None (on when the model has attention), got {signals!r}")
        check_scheduler(scheduler)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        every = check_limit("every", every, limit="log_every")
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
        self.dropped = 0
        """Records lost to I/O errors (logged once; the file stays readable)."""
        self.stats: GradientStats | None = None
        self.diagnosis: Diagnosis | None = None
        self._pending: list[tuple[int, int, Any]] = []
        self._window = 0
        self._last_logged = 0
        self._io_error_logged = False
        self._header_checked = False
        self._reader: ShardedReader | GradientProbe | None = None
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
                "steps": "optimizer steps, counted from 1",
            }
            self._writer = RunWriter(path, mode=mode, keep_recent=keep_recent, meta={**info, **dict(meta or {})})
            self.calls = self._writer.last_step
            self.records = self._writer.records
            self.dropped = self._writer.dropped
        if mode == "a" and _distributed():
            start = [self.calls]  # every rank counts from rank 0's last step: the same logged steps everywhere
            torch.distributed.broadcast_object_list(start, src=0)
            self.calls = int(start[0])
        self._window = self._last_logged = self._last_step = self.calls
        # With the optimizer known, a logged step is read right before optimizer.step() (complete gradients
        # wherever zero_grad() sits); log(loss) then counts the step and keeps its loss.
        self.optimizer = optimizer
        self._optimizer_steps = self.calls
        self._step_reads = StepReads(optimizer, self._read_at_step) if optimizer is not None else None
        self.signals: InstabilitySignals | None = None
        """The instability signals' hooks (attention logits, entropy, log Z per block), measured on the training
        forward passes of the logged steps; None when off (``signals=False``, no attention module, not rank 0,
        a sharded model; by default also a ``torch.compile``'d one: Python hooks would break its graph)."""
        self._signals_recorded = -1
        self._held: tuple[RunRecord, Diagnosis] | None = None
        """A step record (and its gradient verdict) waiting for its step's instability reading, which
        ``optimizer.step()`` completes: written right after it, or at the next ``log()`` or ``close()``."""
        self._held_flush: Any = None
        wanted = has_attention(self.model) and not is_compiled(model) if signals is None else signals
        if wanted and self.writes and not self.sharded:
            self.signals = InstabilitySignals(
                self.model,
                sample=SIGNALS_SAMPLE,
                optimizer=optimizer,
                schedule=self._signals_step,
                scheduler=scheduler,
            )
            if self.signals.optimizer is not None:  # after the signals' own hook: the reading is complete by then
                self._held_flush = self.signals.optimizer.register_step_post_hook(self._flush_after_step)

    # ------------------------------------------------------------------ the training loop's call

    def log(
        self, loss: Any = None, step: int | None = None, scaler: Any = None, loss_scale: float = 1.0
    ) -> GradientStats | None:
        """Count one optimizer step; on a logged one, read the gradients and append a record.

        ``loss``: the step's loss (a number or scalar tensor), or the list of its micro-batch losses (their sum is
        recorded); ``loss_scale`` multiplies it (pass the accumulation count when the loss was divided by it).
        ``step`` defaults to the number of calls (optimizer steps counted from 1); ``scaler`` is a
        ``torch.amp.GradScaler`` whose scale still multiplies the gradients.
        Returns the stats on a logged step (on rank 0, and on every rank of a sharded model), else ``None``.
        Never raises for an I/O error (see :attr:`dropped`).
        """
        if self._writer is None and self.writes:
            raise RuntimeError(f"GradientLogger for {self.path} is closed")
        self._flush_held()  # its optimizer step never came (a step the scaler skipped)
        if isinstance(loss_scale, bool) or not isinstance(loss_scale, (int, float)) or not (
            math.isfinite(loss_scale) and loss_scale > 0
        ):
            raise ValueError(f"loss_scale must be a positive finite number, got {loss_scale!r}")
        self.calls += 1
        step = self.calls if step is None else int(step)
        self._last_step = step
        if loss is not None:
            self._pending.append((self.calls - self._window - 1, step, _step_loss(loss, float(loss_scale))))
        if self._step_reads is not None or not (self.calls == 1 or self.calls % self.every == 0):
            return None
        return self._record(step, scaler)

    def _signals_step(self) -> int | None:
        """A training forward pass: the step it belongs to (numbered as the logger numbers the next step) when
        that step will be logged, else None (not measured)."""
        if self._step_reads is not None:
            upcoming = self._optimizer_steps + 1
            return upcoming if upcoming == 1 or upcoming % self.every == 0 else None
        upcoming = self.calls + 1
        return self._last_step + 1 if upcoming == 1 or upcoming % self.every == 0 else None

    def _new_readings(self) -> tuple[InstabilityReading, ...]:
        """The readings measured since the previous record, one per step (the last forward pass of a step wins:
        micro-batches of an accumulated step each measure)."""
        if self.signals is None:
            return ()
        latest: dict[int, InstabilityReading] = {}
        for reading in self.signals.history:
            if reading.step > self._signals_recorded:
                latest[reading.step] = reading
        if latest:
            self._signals_recorded = max(latest)
        return tuple(latest[step] for step in sorted(latest))

    def _gradient_verdict(self, stats: GradientStats) -> Diagnosis:
        return diagnose(
            stats, steps=self.records + 1, config=getattr(self.model, "config", None), optimizer=self.optimizer
        )

    def _with_warning(self, diagnosis: Diagnosis) -> Diagnosis:
        """The gradient verdict, or ``unstable`` while the instability signals' history warns."""
        if self.signals is None or not self.signals.history:
            return diagnosis
        return unstable_verdict(diagnosis, warn_unstable(self.signals.history))

    def _flush_held(self) -> None:
        """Write the held record with its step's reading, its verdict read again with that reading in the history."""
        held, self._held = self._held, None
        if held is not None:
            record, gradient = held
            self.diagnosis = self._with_warning(gradient)
            self._append(replace(record, verdict=self.diagnosis, signals=self._new_readings()))

    def _flush_after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            self._flush_held()
        except Exception:  # noqa: BLE001 - a step hook: the user's loop must go on
            logger.exception("GradientLogger could not write the record of step %s", self._last_step)

    def _read_at_step(self) -> None:
        """optimizer.step() is about to run (a step pre-hook): read and record a due step now."""
        self._optimizer_steps += 1
        steps = self._optimizer_steps
        if (steps == 1 or steps % self.every == 0) and (self._writer is not None or not self.writes):
            self._record(steps, None)  # GradScaler.step() unscales before it calls optimizer.step()

    def _record(self, step: int, scaler: Any) -> GradientStats | None:
        self._flush_held()  # the previous logged step's optimizer step never came (a step the scaler skipped)
        loss_steps, losses = self._collect_losses()
        if self._reader is None:
            return None  # a DDP rank other than 0: rank 0 has the same (all-reduced) gradients
        last_loss = float(losses[-1]) if len(losses) and loss_steps[-1] == step else None
        stats = self._reader.read(last_loss, step=step, scaler=scaler)
        self.stats = stats
        if not self.writes:
            return stats
        gradient = self._gradient_verdict(stats)
        self.diagnosis = self._with_warning(gradient)
        extra: dict[str, Any] = {"scale": _scale_of(scaler)} if scaler is not None and scaler.is_enabled() else {}
        record = RunRecord.from_stats(stats, self.diagnosis, loss_steps, losses, extra=extra)
        if self.signals is not None and self.signals.awaits_step:
            self._held = (record, gradient)  # its reading completes at optimizer.step(): written then, with it
        else:
            self._append(replace(record, signals=self._new_readings()))
        return stats

    def _collect_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """The losses since the previous log, as numbers, with one device transfer; under DDP each the mean over
        the ranks (one ``all_reduce`` of sums and counts, so a rank that passed no loss at a step does not count)."""
        pending, self._pending = self._pending, []
        size = self.calls - self._window
        self._window = self.calls
        if _distributed():
            return self._global_losses(pending, size)
        if not pending:
            return np.zeros(0, np.int64), np.zeros(0)
        _, steps, values = zip(*pending, strict=True)
        tensors = [v for v in values if isinstance(v, torch.Tensor)]
        if len(tensors) == len(values):
            numbers = torch.stack([t.float() for t in tensors]).double().cpu().numpy()
        else:
            numbers = np.array([float(v) for v in values], dtype=np.float64)
        return np.asarray(steps, dtype=np.int64), numbers

    def _global_losses(self, pending: list[tuple[int, int, Any]], size: int) -> tuple[np.ndarray, np.ndarray]:
        device = next((v.device for _, _, v in pending if isinstance(v, torch.Tensor)), torch.device("cpu"))
        if torch.distributed.get_backend() == "nccl" and device.type == "cpu":
            device = torch.device("cuda", torch.cuda.current_device())
        table = torch.zeros(3, size, dtype=torch.float64, device=device)
        for index, step, value in pending:
            if 0 <= index < size:
                table[0, index] = value.double() if isinstance(value, torch.Tensor) else float(value)
                table[1, index] = 1.0
                table[2, index] = float(step)
        torch.distributed.all_reduce(table)
        numbers = table.cpu().numpy()
        present = numbers[1] > 0
        counts = numbers[1][present]
        return (numbers[2][present] / counts).round().astype(np.int64), numbers[0][present] / counts

    def _append(self, record: RunRecord) -> None:
        """Write one record; an I/O error drops it (counted, logged once) and never reaches the loop."""
        assert self._writer is not None
        if self.dropped:
            record.extra["dropped"] = self.dropped
        try:
            if not self._header_checked and self.stats is not None:
                layout, _, _ = split_stats(self.stats)
                layout["names"] = [clean_name(n) for n in layout["names"]]
                self._writer.write_header(layout)  # written once; checked against the file's when appending
                self._header_checked = True
            if record.losses_only:
                self._writer.append_losses(record.loss_steps, record.losses)
            else:
                self._writer.append(record)
        except OSError as error:
            self.dropped += 1
            self._writer.dropped = self.dropped
            if not self._io_error_logged:
                self._io_error_logged = True
                logger.error(
                    "GradientLogger could not write %s (%s); this record is dropped, training goes on, and the "
                    "file stays readable. Further errors are counted, not logged.", self.path, error,
                )
            return
        if not record.losses_only:
            self.records += 1
            self._last_logged = record.step

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._writer is None

    def close(self) -> None:
        """Write what is pending, mark the file finished, close it and release its lock (also done by a ``with``
        block; the OS releases the lock if the process dies).

        The losses logged since the last record are written, with a record of the last step's gradients when
        they are still there (not zeroed since the last ``backward()``). Under DDP the other ranks are not
        waited for: pending losses (their global mean needs every rank) are not written.
        """
        step_reads = getattr(self, "_step_reads", None)
        if step_reads is not None:
            step_reads.remove()
            self._step_reads = None
        signals = getattr(self, "signals", None)
        if signals is not None:
            signals.remove()
        if getattr(self, "_held_flush", None) is not None:
            self._held_flush.remove()
            self._held_flush = None
        if self._writer is None:
            return
        try:
            self._flush_held()
            self._finish()
        except Exception:  # noqa: BLE001 - closing must release the file whatever the last read did
            logger.exception("GradientLogger could not write the last step of %s", self.path)
        finally:
            self._writer.close()
            self._writer = None

    def _finish(self) -> None:
        if not self._pending or _distributed() or self.calls == self._last_logged:
            return
        loss_steps, losses = self._collect_losses()
        step = self.calls
        stats = None
        if self._reader is not None and self._writer is not None and self._writer.header is not None:
            stats = self._reader.read(float(losses[-1]) if len(losses) and loss_steps[-1] == step else None,
                                      step=step)
        if stats is not None and stats.has_grad.any():
            self.stats = stats
            self.diagnosis = self._with_warning(self._gradient_verdict(stats))
            self._append(RunRecord.from_stats(stats, self.diagnosis, loss_steps, losses, signals=self._new_readings()))
        else:
            self._append(RunRecord(step=step, loss_steps=loss_steps.astype(np.float64), losses=losses,
                                   losses_only=True))

    def __enter__(self) -> GradientLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "writer" if self.writes else f"rank {self.rank} (rank 0 writes)"
        return f"<GradientLogger {self.path} {role}, every {self.every}, {self.records} records>"
