"""``TrainingSession``: a model, its data and optimizer, stepped one minibatch at a time with the probe on.

Thread-safe by construction: one lock covers a single training step, and :meth:`TrainingSession.reconfigure`
takes the same lock, so a change from another thread lands between two steps, never inside one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..nets import NetConfig, build_model, field_names
from ..validation import OPTIMIZERS, check_choice, check_limit
from .data import DATASETS, SEQUENCE_DATASETS, Dataset, make_dataset
from .history import History
from .layout import RowMap
from .probe import GradientProbe
from .stats import GradientStats

__all__ = ["OPTIMIZERS", "SessionSettings", "TrainingSession", "restart_reason"]

DEFAULT_DATASET = {"mlp": "spiral", "rnn": "adding", "transformer": "recall"}
NET_FIELDS = frozenset(field_names())
DATA_FIELDS = frozenset({"dataset", "seed", "n_samples", "noise"})
OPTIMIZER_FIELDS = frozenset({"optimizer", "momentum", "weight_decay"})


@dataclass(frozen=True)
class SessionSettings:
    """Everything about a run that is not the net: validated the same way ``NetConfig`` is."""

    dataset: str = "spiral"
    optimizer: str = "sgd"
    lr: float = 0.1
    batch_size: int = 128
    seed: int = 0
    n_samples: int = 1024
    noise: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip: float | None = None
    freeze: int = 0
    eval_every: int = 10

    def __post_init__(self) -> None:
        def checked(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)  # the checked value (a numpy number becomes a Python one)

        checked("dataset", check_choice("dataset", self.dataset, DATASETS))
        checked("optimizer", check_choice("optimizer", self.optimizer, OPTIMIZERS))
        for name in ("lr", "batch_size", "seed", "n_samples", "momentum", "weight_decay", "freeze", "eval_every"):
            checked(name, check_limit(name, getattr(self, name)))
        for name in ("noise", "clip"):
            checked(name, check_limit(name, getattr(self, name), allow_none=True))


SESSION_FIELDS = frozenset(SessionSettings.__dataclass_fields__)


class TrainingSession:
    """Train ``config`` on ``dataset``, measuring every layer's gradient at every step.

    Pass a :class:`NetConfig`, or its fields as keywords (``TrainingSession(activation="sigmoid", depth=20)``).
    ``dataset`` defaults to the kind's natural task (spiral, adding, recall). ``freeze=k`` freezes the first
    ``k`` blocks, as when fine-tuning. Same arguments, same numbers.
    """

    def __init__(
        self,
        config: NetConfig | None = None,
        dataset: str | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        batch_size: int = 128,
        seed: int = 0,
        *,
        history_size: int = 2000,
        **options: Any,
    ) -> None:
        if config is not None and not isinstance(config, NetConfig):
            raise ValueError(f"config must be a NetConfig or None, got {type(config).__name__}")
        net_changes = {k: v for k, v in options.items() if k in NET_FIELDS}
        session_options = {k: v for k, v in options.items() if k in SESSION_FIELDS}
        unknown = set(options) - set(net_changes) - set(session_options)
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)}; NetConfig fields are {sorted(NET_FIELDS)}, "
                f"session options are {sorted(SESSION_FIELDS)}"
            )
        config = (config or NetConfig()).replace(**net_changes) if net_changes or config is None else config
        settings = SessionSettings(
            dataset=DEFAULT_DATASET[config.kind] if dataset is None else dataset,
            optimizer=optimizer,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            **session_options,
        )
        _check_compatible(config, settings)
        self.history_size = history_size
        self._lock = threading.RLock()
        self._config = config
        self._settings = settings
        self._data: Dataset | None = None
        self._data_key: tuple[Any, ...] | None = None
        self.run_id = 0
        """Counts the runs: a new model (and history) takes the next number. Views reset their ranges on it."""
        self.restart_reason: str | None = None
        """Why the current run started afresh (``"activation changed"``, ``"reset"``); ``None`` for the first."""
        self._rebuild()

    @property
    def config(self) -> NetConfig:
        return self._config

    @property
    def settings(self) -> SessionSettings:
        return self._settings

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def data(self) -> Dataset:
        assert self._data is not None
        return self._data

    @property
    def lock(self) -> threading.RLock:
        """Held for the duration of one step; hold it to read several attributes consistently."""
        return self._lock

    def __getattr__(self, name: str) -> Any:
        if name in SESSION_FIELDS:
            return getattr(self.__dict__["_settings"], name)
        raise AttributeError(name)

    def _rebuild(self, reason: str | None = None) -> None:
        """(Re)create data if its inputs changed, then the model, optimizer, probe and history: a new run."""
        config, settings = self._config, self._settings
        seq_len = config.seq_len if settings.dataset in SEQUENCE_DATASETS else None
        key = (settings.dataset, settings.n_samples, settings.noise, settings.seed, seq_len)
        if key != self._data_key:
            self._data = make_dataset(
                settings.dataset,
                n_samples=settings.n_samples,
                noise=settings.noise,
                seed=settings.seed,
                seq_len=seq_len or 20,
            )
            self._data_key = key
        data = self.data
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            self._model = build_model(config, data.in_features, data.out_features)
        self._apply_freeze()
        self._make_optimizer()
        self._probe = GradientProbe(self._model)
        self._generator = torch.Generator().manual_seed(settings.seed + 1)
        self.history = History(
            self.history_size,
            self._probe.names,
            seq_len=config.seq_len if config.kind == "rnn" else None,
        )
        self.steps = 0
        self.last_stats: GradientStats | None = None
        self.last_eval: dict[str, float] = {}
        self.run_id += 1
        self.restart_reason = reason if self.run_id > 1 else None

    def _apply_freeze(self) -> None:
        frozen_blocks = set(range(self._settings.freeze))
        rows = RowMap.of(self._model)
        for name, block in zip(rows.names, rows.blocks, strict=True):
            if block in frozen_blocks:
                for p in self._model.get_submodule(name).parameters(recurse=False):
                    p.requires_grad_(False)

    def _make_optimizer(self) -> None:
        s = self._settings
        params = [p for p in self._model.parameters() if p.requires_grad]
        if not params:
            params = list(self._model.parameters())
        if s.optimizer == "adam":
            self._optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
        else:
            momentum = s.momentum if s.optimizer == "momentum" else 0.0
            self._optimizer = torch.optim.SGD(params, lr=s.lr, momentum=momentum, weight_decay=s.weight_decay)

    @property
    def optimizer_instance(self) -> torch.optim.Optimizer:
        return self._optimizer

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.data.task == "regression":
            return F.mse_loss(output, target)
        return F.cross_entropy(output, target)

    def step(self, n: int = 1) -> GradientStats:
        """Run ``n`` training steps; returns the stats of the last one (also in ``last_stats``, ``history``)."""
        n = check_limit("n", n, limit="train_steps")
        stats = None
        for _ in range(n):
            with self._lock:
                stats = self._one_step()
        assert stats is not None
        return stats

    def _one_step(self) -> GradientStats:
        data, settings = self.data, self._settings
        model = self._model
        model.train()
        index = torch.randint(len(data.x_train), (settings.batch_size,), generator=self._generator)
        output = model(data.x_train[index])
        loss = self._loss(output, data.y_train[index])
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip is not None:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], settings.clip)
        self._optimizer.step()
        self.steps += 1
        stats = self._probe.read(loss, step=self.steps)
        self.history.append(stats)
        self.last_stats = stats
        if self.steps % settings.eval_every == 0:
            self.evaluate()
        return stats

    def peek(self) -> GradientStats:
        """The gradients at the current weights, without training: one forward/backward, no optimizer step.

        Why: the textbook pictures are at initialization, and a widget should show them before anyone presses
        Play. The batch is the one the next :meth:`step` draws (the data generator is copied, not advanced), so
        ``peek()`` at step 0 reads exactly the gradients that step 1 will apply. Nothing persists: weights,
        optimizer state, the probe's counters, ``history``, BatchNorm running statistics and ``.grad`` are left
        as they were. The stats carry ``step=self.steps``.
        """
        with self._lock:
            data, model = self.data, self._model
            generator = torch.Generator().manual_seed(0)
            generator.set_state(self._generator.get_state())
            index = torch.randint(len(data.x_train), (self._settings.batch_size,), generator=generator)
            params = list(model.parameters())
            saved_grads = [p.grad for p in params]
            saved_buffers = [b.detach().clone() for b in model.buffers()]
            was_training = model.training
            try:
                for p in params:
                    p.grad = None
                model.train()
                loss = self._loss(model(data.x_train[index]), data.y_train[index])
                loss.backward()
                return GradientProbe(model, track_weights=False).read(loss, step=self.steps)
            finally:
                with torch.no_grad():
                    for buffer, saved in zip(model.buffers(), saved_buffers, strict=True):
                        buffer.copy_(saved)
                for p, grad in zip(params, saved_grads, strict=True):
                    p.grad = grad
                model.train(was_training)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test loss (and accuracy for classification) on the held-out split; recorded in ``history``."""
        with self._lock:
            data = self.data
            self._model.eval()
            output = self._model(data.x_test)
            loss = float(self._loss(output, data.y_test))
            if data.task == "classification":
                accuracy = float((output.argmax(dim=1) == data.y_test).float().mean())
            else:
                accuracy = float("nan")
            self._model.train()
            self.history.append_test(self.steps, loss, accuracy)
            self.last_eval = {"test_loss": loss, "test_accuracy": accuracy}
            return self.last_eval

    def reconfigure(self, **changes: Any) -> set[str]:
        """Change net fields and/or session options between two steps. Returns what kind of change it was.

        Net fields, the dataset, seed, data size/noise and ``freeze`` rebuild the model (history restarts);
        the optimizer kind or its momentum/weight decay rebuild the optimizer; ``lr``, ``batch_size``,
        ``clip`` and ``eval_every`` apply to the next step. Everything is validated before anything changes.
        """
        unknown = set(changes) - NET_FIELDS - SESSION_FIELDS
        if unknown:
            raise ValueError(
                f"unknown field(s) {sorted(unknown)}; NetConfig fields are {sorted(NET_FIELDS)}, "
                f"session options are {sorted(SESSION_FIELDS)}"
            )
        with self._lock:
            net = {k: v for k, v in changes.items() if k in NET_FIELDS}
            session = {k: v for k, v in changes.items() if k in SESSION_FIELDS}
            config = self._config.replace(**net) if net else self._config
            if "kind" in net and "dataset" not in session and config.kind != self._config.kind:
                session["dataset"] = DEFAULT_DATASET[config.kind]
            settings = _replace_settings(self._settings, session)
            _check_compatible(config, settings)
            changed_net = config != self._config
            changed_session = {k for k in session if getattr(settings, k) != getattr(self._settings, k)}
            self._config, self._settings = config, settings
            if changed_net or changed_session & (DATA_FIELDS | {"freeze"}):
                self._rebuild(restart_reason(changes))
                return {"model"}
            if changed_session & OPTIMIZER_FIELDS:
                self._make_optimizer()
                return {"optimizer"}
            if "lr" in changed_session:
                for group in self._optimizer.param_groups:
                    group["lr"] = settings.lr
            return {"settings"} if changed_session else set()

    def reset(self) -> None:
        """Fresh weights from the seed, empty history, step 0."""
        with self._lock:
            self._rebuild("reset")

    @property
    def diverged(self) -> bool:
        """True once the loss or a gradient is inf/NaN: stepping further only spreads NaNs."""
        stats = self.last_stats
        if stats is None:
            return False
        return not math.isfinite(stats.loss) or not np.isfinite(stats.grad_norm).all()

    def describe(self) -> dict[str, Any]:
        """Config and settings as one flat dict (what a UI shows, what a URL preset sets)."""
        return {**self._config.as_dict(), **{k: getattr(self._settings, k) for k in SESSION_FIELDS}}


def restart_reason(changes: Mapping[str, Any]) -> str:
    """``"activation changed"``, ``"depth and width changed"``: why a run started afresh, in a few words."""
    names = sorted(changes)
    if not names:
        return "reset"
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{joined} changed"


def _replace_settings(settings: SessionSettings, changes: dict[str, Any]) -> SessionSettings:
    if not changes:
        return settings
    values = {k: getattr(settings, k) for k in SESSION_FIELDS}
    values.update(changes)
    return SessionSettings(**values)


def _check_compatible(config: NetConfig, settings: SessionSettings) -> None:
    sequence = settings.dataset in SEQUENCE_DATASETS
    if config.kind == "mlp" and sequence:
        raise ValueError(
            f"dataset {settings.dataset!r} is a sequence task; kind 'mlp' takes one of "
            f"{[d for d in DATASETS if d not in SEQUENCE_DATASETS]}"
        )
    if config.kind != "mlp" and not sequence:
        raise ValueError(
            f"dataset must be one of {list(SEQUENCE_DATASETS)} for kind {config.kind!r}, got {settings.dataset!r}"
        )

