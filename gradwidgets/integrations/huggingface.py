"""A Hugging Face ``TrainerCallback`` that records per-layer gradients and the training loss to a run file.

::

    from gradwidgets.integrations.huggingface import GradientLoggerCallback
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[GradientLoggerCallback("run.gwrun")])

**Clipping**: the ``Trainer`` calls ``on_pre_optimizer_step`` once per optimizer step, after gradient accumulation
and **after gradient clipping** (``max_grad_norm``, 1.0 by default); no callback hook comes between the last
``backward()`` and the clipping. So with clipping on, in a single process, the callback reads the gradients at the
end of the last micro-batch's ``backward()`` instead (a hook on the model's loss queues the read to run when autograd
finishes; accelerate's ``sync_gradients`` says which micro-batch is the last): the numbers are the unclipped ones,
divided by the fp16 loss scale when there is one. Under DDP that moment comes before DDP's own gradient averaging,
so there the callback reads at ``on_pre_optimizer_step`` and the recorded norms are the clipped ones (a total of at
most ``max_grad_norm``). Either way ``run.meta["gradients"]`` says which. Without clipping, with fp16, set
``callback.scaler = trainer.accelerator.scaler`` so the logger divides the scale out.

**Losses**: the loss of each optimizer step is the mean of its micro-batch losses, taken from the model's outputs
(``output.loss`` or ``output["loss"]``, as the Trainer uses it) by a forward hook during training. **Steps** are
optimizer steps counted from 1 (``state.global_step + 1``), as :class:`~gradwidgets.GradientLogger` counts them.
Under DDP every rank runs the callback, rank 0 writes (the loss averaged over the ranks).

**Learning-rate schedule**: the Trainer hands its ``lr_scheduler`` to every callback event; the callback gives it
to the logger (``scheduler=``), so the instability signals read the learning rate, the gradient-momentum cosine
and the schedule's outlook over the next 100 optimizer steps, and can warn when a run oscillating at the edge of
stability is about to have its learning rate doubled by the warm-up. Its schedules (``get_scheduler``: LambdaLR
and the like) step once per optimizer step, as the logger needs; the ones it steps on evaluation instead
(``reduce_lr_on_plateau``, ``greedy``) are not passed. A ``scheduler=`` given to the callback wins.
"""

from __future__ import annotations

import logging
import os
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "gradwidgets.integrations.huggingface needs transformers: pip install 'gradwidgets[huggingface]'"
    ) from error

import torch

from ..core.distributed import world_size
from ..core.logger import DEFAULT_EVERY, GradientLogger

__all__ = ["GradientLoggerCallback"]

logger = logging.getLogger(__name__)


def _per_step_scheduler(scheduler: Any) -> Any:
    """The Trainer's scheduler when it steps once per optimizer step (unwrapped from accelerate's wrapper), else
    None: the Trainer steps ``ReduceLROnPlateau`` and ``GreedyLR`` on evaluation metrics, not per step."""
    if type(scheduler).__name__ == "AcceleratedScheduler":
        scheduler = getattr(scheduler, "scheduler", None)
    if scheduler is None:
        return None
    try:
        from transformers.optimization import GreedyLR
    except ImportError:  # pragma: no cover - older transformers
        on_metrics: tuple[type, ...] = (torch.optim.lr_scheduler.ReduceLROnPlateau,)
    else:
        on_metrics = (torch.optim.lr_scheduler.ReduceLROnPlateau, GreedyLR)
    if isinstance(scheduler, on_metrics):
        logger.debug("GradientLoggerCallback: %s steps on metrics, not per optimizer step: no learning-rate outlook",
                     type(scheduler).__name__)
        return None
    return scheduler


def _last_micro_batch() -> bool:
    """True while the Trainer runs the micro-batch after which it clips and steps (accelerate's flag)."""
    try:
        from accelerate.state import GradientState
    except ImportError:  # pragma: no cover - the Trainer needs accelerate
        return False
    return bool(GradientState().sync_gradients)


def _output_loss(output: Any) -> torch.Tensor | None:
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if loss is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        loss = output[0] if output[0].ndim == 0 else None
    return loss if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


class GradientLoggerCallback(TrainerCallback):
    """Log every ``every``-th optimizer step of ``Trainer.train`` to ``path`` (other keywords go to
    :class:`~gradwidgets.GradientLogger`, e.g. ``signals``: the instability signals of GPT-2 / Llama-style attention,
    on by default; the Trainer's learning-rate scheduler is given to the logger as ``scheduler``)."""

    def __init__(self, path: str | os.PathLike[str], every: int = DEFAULT_EVERY, **logger_options: Any) -> None:
        self.path = path
        self.every = every
        self.logger_options = logger_options
        self.logger: GradientLogger | None = None
        self.scaler: Any = None
        self._losses: list[torch.Tensor] = []
        self._hook: Any = None
        self._early = False
        self._state: Any = None
        self._optimizer: Any = None
        self._read_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.logger is None and model is not None:
            options = dict(self.logger_options)  # not popped from our own: a second train() keeps its meta
            clipped = bool(args.max_grad_norm)
            self._early = clipped and world_size() == 1
            if not clipped:
                gradients = "as backward() left them (no clipping)"
            elif self._early:
                gradients = f"read before clipping (max_grad_norm={args.max_grad_norm}), at the end of backward()"
            else:
                gradients = f"clipped to max_grad_norm={args.max_grad_norm} before they were read (DDP)"
            meta = {
                "framework": "transformers",
                "max_grad_norm": args.max_grad_norm,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "gradients": gradients,
                **options.pop("meta", {}),
            }
            self._state, self._optimizer, self._read_step = state, kwargs.get("optimizer"), 0
            if options.get("scheduler") is None:
                options["scheduler"] = _per_step_scheduler(kwargs.get("lr_scheduler"))
            self.logger = GradientLogger(model, self.path, every=self.every, meta=meta, **options)
            self._losses = []
            self._hook = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module: Any, inputs: Any, output: Any) -> None:
        if module.training and torch.is_grad_enabled():
            loss = _output_loss(output)
            if loss is not None:
                self._losses.append(loss.detach())
                if self._early and loss.requires_grad and _last_micro_batch():
                    loss.register_hook(self._on_loss_gradient)

    def _on_loss_gradient(self, grad: torch.Tensor) -> None:
        # The first moment of this backward(): queue the read for its end, when every gradient is accumulated.
        torch.autograd.Variable._execution_engine.queue_callback(self._read_before_clipping)

    def _read_before_clipping(self) -> None:
        try:
            step = self._state.global_step + 1
            scaler = self.scaler or getattr(self._optimizer, "scaler", None)
            self._log(step, scaler)
            self._read_step = step
        except Exception:  # noqa: BLE001 - inside autograd: never break the user's backward()
            logger.exception("GradientLoggerCallback could not read the gradients before clipping")

    def _log(self, step: int, scaler: Any) -> None:
        if self.logger is None:
            return
        losses, self._losses = self._losses, []
        loss = [value / len(losses) for value in losses] if losses else None  # their sum: the mean
        self.logger.log(loss, step=step, scaler=scaler)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step + 1
        if self.logger is not None and self._read_step != step:  # not already read before clipping
            scaler = self.scaler if not args.max_grad_norm else None  # clipping already unscaled the gradients
            self._log(step, scaler)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.logger is not None:
            self.logger.close()
            self.logger = None
