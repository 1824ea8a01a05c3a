"""A Hugging Face ``TrainerCallback`` that records per-layer gradients and the training loss to a run file.

::

    from gradwidgets.integrations.huggingface import GradientLoggerCallback
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[GradientLoggerCallback("run.gwrun")])

**Clipping**: the ``Trainer`` calls ``on_pre_optimizer_step`` once per optimizer step, after gradient accumulation
and **after gradient clipping** (``max_grad_norm``, 1.0 by default), and no callback hook comes between the last
``backward()`` and the clipping. So with clipping on, the recorded norms are the clipped ones (a total of at most
``max_grad_norm``: an exploding run cannot show); the run's metadata says so (``gradients: "clipped ..."``). Set
``max_grad_norm=0`` to record the raw gradients. With fp16 the Trainer's clipping unscales the gradients first;
without clipping they are still scaled here: set ``callback.scaler = trainer.accelerator.scaler`` so the logger
divides the scale out.

**Losses**: the loss of each optimizer step is the mean of its micro-batch losses, taken from the model's outputs
(``output.loss`` or ``output["loss"]``, as the Trainer uses it) by a forward hook during training. **Steps** are
optimizer steps counted from 1 (``state.global_step + 1``), as :class:`~gradwidgets.GradientLogger` counts them.
Under DDP every rank runs the callback, rank 0 writes (the loss averaged over the ranks).
"""

from __future__ import annotations

import os
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "gradwidgets.integrations.huggingface needs transformers: pip install 'gradwidgets[huggingface]'"
    ) from error

import torch

from ..core.logger import DEFAULT_EVERY, GradientLogger

__all__ = ["GradientLoggerCallback"]


def _output_loss(output: Any) -> torch.Tensor | None:
    loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
    if loss is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        loss = output[0] if output[0].ndim == 0 else None
    return loss.detach() if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None


class GradientLoggerCallback(TrainerCallback):
    """Log every ``every``-th optimizer step of ``Trainer.train`` to ``path`` (other keywords go to
    :class:`~gradwidgets.GradientLogger`)."""

    def __init__(self, path: str | os.PathLike[str], every: int = DEFAULT_EVERY, **logger_options: Any) -> None:
        self.path = path
        self.every = every
        self.logger_options = logger_options
        self.logger: GradientLogger | None = None
        self.scaler: Any = None
        self._losses: list[torch.Tensor] = []
        self._hook: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.logger is None and model is not None:
            options = dict(self.logger_options)  # not popped from our own: a second train() keeps its meta
            clipped = bool(args.max_grad_norm)
            meta = {
                "framework": "transformers",
                "max_grad_norm": args.max_grad_norm,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "gradients": f"clipped to max_grad_norm={args.max_grad_norm} before they were read" if clipped
                else "as backward() left them (no clipping)",
                **options.pop("meta", {}),
            }
            self.logger = GradientLogger(model, self.path, every=self.every, meta=meta, **options)
            self._losses = []
            self._hook = model.register_forward_hook(self._on_forward)

    def _on_forward(self, module: Any, inputs: Any, output: Any) -> None:
        if module.training and torch.is_grad_enabled():
            loss = _output_loss(output)
            if loss is not None:
                self._losses.append(loss)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.logger is not None:
            losses, self._losses = self._losses, []
            scaler = self.scaler if not args.max_grad_norm else None  # clipping already unscaled the gradients
            loss = [value / len(losses) for value in losses] if losses else None  # their sum: the mean
            self.logger.log(loss, step=state.global_step + 1, scaler=scaler)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.logger is not None:
            self.logger.close()
            self.logger = None
