"""A Hugging Face ``TrainerCallback`` that records per-layer gradients to a run file.

::

    from gradwidgets.integrations.huggingface import GradientLoggerCallback
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[GradientLoggerCallback("run.gwrun")])

The ``Trainer`` calls ``on_pre_optimizer_step`` once per optimizer step, after gradient accumulation and **after
gradient clipping** (``max_grad_norm``, 1.0 by default): the recorded norms are the clipped ones (the threshold
is stored in the run's metadata). Set ``max_grad_norm=0`` to record the raw gradients. With fp16 the Trainer's
clipping unscales the gradients first; without clipping they are still scaled here: set
``callback.scaler = trainer.accelerator.scaler`` so the logger divides the scale out. The loss is not handed to
callbacks per step, so the run records gradients and verdicts only. Under DDP every rank runs the callback,
rank 0 writes.
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

from ..core.logger import DEFAULT_EVERY, GradientLogger

__all__ = ["GradientLoggerCallback"]


class GradientLoggerCallback(TrainerCallback):
    """Log every ``every``-th optimizer step of ``Trainer.train`` to ``path`` (other keywords go to
    :class:`~gradwidgets.GradientLogger`)."""

    def __init__(self, path: str | os.PathLike[str], every: int = DEFAULT_EVERY, **logger_options: Any) -> None:
        self.path = path
        self.every = every
        self.logger_options = logger_options
        self.logger: GradientLogger | None = None
        self.scaler: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.logger is None and model is not None:
            meta = {"framework": "transformers", "max_grad_norm": args.max_grad_norm,
                    "gradient_accumulation_steps": args.gradient_accumulation_steps,
                    **self.logger_options.pop("meta", {})}
            self.logger = GradientLogger(model, self.path, every=self.every, meta=meta, **self.logger_options)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.logger is not None:
            scaler = self.scaler if not args.max_grad_norm else None  # clipping already unscaled the gradients
            self.logger.log(step=state.global_step, scaler=scaler)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None
