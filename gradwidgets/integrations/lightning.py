"""A PyTorch Lightning ``Callback`` that records per-layer gradients to a run file.

::

    from gradwidgets.integrations.lightning import GradientLoggerCallback
    trainer = L.Trainer(callbacks=[GradientLoggerCallback("run.gwrun")], accumulate_grad_batches=4)
    # then: gradwidgets watch run.gwrun

Lightning calls ``on_before_optimizer_step`` once per optimizer step, after the last micro-batch's backward and,
under 16-bit AMP, after ``scaler.unscale_``; gradient clipping comes after it. So the gradients read there are
the accumulated, unscaled, unclipped ones: exactly what to record (no division by the loss scale; an inf/NaN step
the scaler will skip is marked skipped). The loss comes from ``on_before_backward`` (Lightning hands over the
micro-batch loss already divided by ``accumulate_grad_batches``; their sum is the step's loss), kept as a
detached tensor so nothing synchronises the device. Steps are optimizer steps counted from 1 (``global_step + 1``),
as :class:`~gradwidgets.GradientLogger` counts them. Under DDP every rank runs the callback, rank 0 writes the
loss averaged over the ranks.

**Learning-rate schedule**: the logger is made when the fit starts (``on_fit_start``: Lightning has configured the
optimizers and schedulers by then, and built any layers ``configure_model`` makes) and is given the first scheduler
of ``trainer.lr_scheduler_configs`` that Lightning steps once per optimizer step (``interval="step"``,
``frequency=1``, not ``ReduceLROnPlateau``), so the instability signals read the learning rate, the
gradient-momentum cosine and the schedule's outlook over the next 100 optimizer steps. An epoch-stepped scheduler
is not passed (its "100 steps ahead" would be 100 epochs); a debug log says so. A ``scheduler=`` given to the
callback wins.
"""

from __future__ import annotations

import logging
import os
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as error:
        raise ImportError(
            "gradwidgets.integrations.lightning needs PyTorch Lightning: pip install 'gradwidgets[lightning]'"
        ) from error

from ..core.logger import DEFAULT_EVERY, GradientLogger

__all__ = ["GradientLoggerCallback"]

logger = logging.getLogger(__name__)


def _per_step_scheduler(trainer: Any) -> Any:
    """The first configured scheduler Lightning steps once per optimizer step, else None (said in a debug log)."""
    configs = list(getattr(trainer, "lr_scheduler_configs", None) or [])
    for config in configs:
        if config.interval == "step" and config.frequency == 1 and not getattr(config, "reduce_on_plateau", False):
            return config.scheduler
    if configs:
        found = ", ".join(
            f"{type(c.scheduler).__name__} (interval={c.interval!r}, frequency={c.frequency})" for c in configs
        )
        logger.debug("GradientLoggerCallback: no scheduler stepped once per optimizer step (%s): no learning-rate "
                     "outlook", found)
    return None


class _Unscaled:
    """Tells the logger that an AMP scaler is active but the gradients are already unscaled (scale 1)."""

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler

    def is_enabled(self) -> bool:
        return bool(getattr(self.scaler, "is_enabled", lambda: True)())

    def get_scale(self) -> float:
        return 1.0


class GradientLoggerCallback(pl.Callback):
    """Log every ``every``-th optimizer step of ``trainer.fit`` to ``path`` (other keywords go to
    :class:`~gradwidgets.GradientLogger`, e.g. ``keep_recent``, ``meta``, ``signals``: the instability signals are
    on by default when the model has attention, measured where the LightningModule calls its model; the first
    per-step scheduler is given to the logger as ``scheduler``)."""

    def __init__(self, path: str | os.PathLike[str], every: int = DEFAULT_EVERY, **logger_options: Any) -> None:
        super().__init__()
        self.path = path
        self.every = every
        self.logger_options = logger_options
        self.logger: GradientLogger | None = None
        self._loss: Any = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.logger is None:
            options = dict(self.logger_options)  # not popped from our own: a second fit() keeps its meta
            meta = {"framework": "lightning", "accumulate_grad_batches": trainer.accumulate_grad_batches,
                    **options.pop("meta", {})}
            if options.get("scheduler") is None:
                options["scheduler"] = _per_step_scheduler(trainer)
            self.logger = GradientLogger(pl_module, self.path, every=self.every, meta=meta, **options)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        loss = loss.detach()
        self._loss = loss if self._loss is None else self._loss + loss

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.logger is None:
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        loss, self._loss = self._loss, None
        # trainer.global_step counts the optimizer steps done: this one is step global_step + 1 (counted from 1).
        step = trainer.global_step + 1
        self.logger.log(loss, step=step, scaler=_Unscaled(scaler) if scaler is not None else None)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self.logger is not None:
            self.logger.close()
            self.logger = None
