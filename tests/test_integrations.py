"""The Lightning and Hugging Face callbacks on tiny models: each skips cleanly when its framework is absent."""

from __future__ import annotations

import copy
import importlib
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradwidgets as gw


def layer_norms(model: nn.Module) -> list[float]:
    return [
        float(torch.linalg.vector_norm(torch.cat([p.grad.ravel() for p in m.parameters(recurse=False)])))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]


def test_importing_an_integration_without_its_framework_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for blocked in ("lightning", "lightning.pytorch", "pytorch_lightning", "transformers"):
        monkeypatch.setitem(sys.modules, blocked, None)  # import of these now raises ImportError
    for module, extra in (("lightning", "gradwidgets[lightning]"), ("huggingface", "gradwidgets[huggingface]")):
        monkeypatch.delitem(sys.modules, f"gradwidgets.integrations.{module}", raising=False)
        with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
            importlib.import_module(f"gradwidgets.integrations.{module}")


def test_lightning_callback_logs_accumulated_gradients_and_losses(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from gradwidgets.integrations.lightning import GradientLoggerCallback

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    initial = copy.deepcopy(net)
    x, y = torch.randn(32, 3), torch.randn(32, 1)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            return (self.net(batch[0]) - batch[1]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=False)
    callback = GradientLoggerCallback(tmp_path / "pl.gwrun", every=1)
    trainer = pl.Trainer(
        max_steps=3, accumulate_grad_batches=2, accelerator="cpu", devices=1, logger=False, callbacks=[callback],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Module(), loader)
    assert callback.logger is None  # closed at teardown
    run = gw.load_run(tmp_path / "pl.gwrun")
    assert run.steps.tolist() == [1, 2, 3]  # optimizer steps counted from 1, as the plain logger counts them
    assert run.names == ("net.0", "net.2") and run.meta["accumulate_grad_batches"] == 2
    # Step 0 by hand: the two first micro-batches, each loss divided by 2, gradients summed.
    losses = [(initial(x[i : i + 4]) - y[i : i + 4]).pow(2).mean() / 2 for i in (0, 4)]
    sum(losses).backward()
    np.testing.assert_allclose(run.grad_norm[0], layer_norms(initial), rtol=1e-5)
    np.testing.assert_allclose(run.loss[0], float(sum(losses).detach()), rtol=1e-6)


def test_huggingface_callback_logs_once_per_optimizer_step(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradwidgets.integrations.huggingface import GradientLoggerCallback

    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.body(x)
            return {"loss": (out - labels).pow(2).mean(), "logits": out}

    model = Tiny()
    reference = copy.deepcopy(model)
    sample_x, sample_y = torch.randn(3), torch.randn(1)
    # Every sample the same: the gradient does not depend on the Trainer's shuffling.
    data = [{"x": sample_x, "labels": sample_y} for _ in range(32)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        max_grad_norm=0.0, learning_rate=0.0, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
        logging_strategy="no",
    )
    callback = GradientLoggerCallback(tmp_path / "hf.gwrun", every=1)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    run = gw.load_run(tmp_path / "hf.gwrun")
    assert run.steps.tolist() == [1, 2, 3] and run.names == ("body.0", "body.2")
    assert "no clipping" in run.meta["gradients"]
    # The Trainer's losses: each step's loss is the mean of its two micro-batches' (all samples alike here).
    expected = float((reference.body(sample_x[None]) - sample_y[None]).pow(2).mean())
    assert run.loss_steps.tolist() == [1, 2, 3]
    np.testing.assert_allclose(run.losses, [expected] * 3, rtol=1e-5)
    assert run.meta["framework"] == "transformers" and run.meta["max_grad_norm"] == 0.0
    reference(sample_x[None], sample_y[None])["loss"].backward()
    for row in run.grad_norm:  # learning rate 0: the same gradient at every step
        np.testing.assert_allclose(row, layer_norms(reference), rtol=1e-5)


def test_lightning_callback_keeps_its_meta_for_a_second_fit(tmp_path: Path) -> None:
    # Regression: setup() popped "meta" out of the callback's options, so the second fit() wrote a run without it.
    pl = pytest.importorskip("lightning.pytorch")
    from gradwidgets.integrations.lightning import GradientLoggerCallback

    torch.manual_seed(0)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(3, 1)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            return (self.net(batch[0]) - batch[1]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    callback = GradientLoggerCallback(tmp_path / "twice.gwrun", every=1, meta={"experiment": "a"})
    for _ in range(2):
        trainer = pl.Trainer(
            max_steps=2, accelerator="cpu", devices=1, logger=False, callbacks=[callback], enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=4))
        assert gw.load_run(tmp_path / "twice.gwrun").meta["experiment"] == "a"


def test_huggingface_callback_reads_the_gradients_before_clipping(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradwidgets.integrations.huggingface import GradientLoggerCallback

    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.body(x)
            return {"loss": (out - labels).pow(2).mean() * 100, "logits": out}

    model = Tiny()
    reference = copy.deepcopy(model)
    sample_x, sample_y = torch.randn(3), torch.randn(1)
    data = [{"x": sample_x, "labels": sample_y} for _ in range(32)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        max_grad_norm=1e-3, learning_rate=0.0, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
        logging_strategy="no",
    )
    callback = GradientLoggerCallback(tmp_path / "clip.gwrun", every=1)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    run = gw.load_run(tmp_path / "clip.gwrun")
    assert run.steps.tolist() == [1, 2, 3] and "before clipping" in run.meta["gradients"]
    reference(sample_x[None], sample_y[None])["loss"].backward()
    expected = layer_norms(reference)
    assert np.sqrt(np.sum(np.square(expected))) > 1  # clipping to 1e-3 would have shrunk them 1000-fold and more
    for row in run.grad_norm:
        np.testing.assert_allclose(row, expected, rtol=1e-5)
    np.testing.assert_allclose(run.losses, [float(reference(sample_x[None], sample_y[None])["loss"])] * 3, rtol=1e-5)


def tiny_gpt2_training(transformers: Any, tmp_path: Path, samples: int, **arguments: Any) -> tuple[Any, list, Any]:
    """A 2-block GPT-2 built from a config, ``samples`` random 8-token sequences and the Trainer's arguments for 3
    optimizer steps of 4 sequences on the CPU, no clipping (``arguments`` add to them)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 32, (samples, 8), generator=gen)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4, max_grad_norm=0.0,
        learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
        logging_strategy="no", **arguments,
    )
    return model, data, args


def test_huggingface_callback_records_a_gpt2s_instability_signals(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradwidgets.integrations.huggingface import GradientLoggerCallback

    model, data, args = tiny_gpt2_training(transformers, tmp_path, samples=24, gradient_accumulation_steps=2)
    on = GradientLoggerCallback(tmp_path / "hf.gwrun", every=1)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[on]).train()
    run = gw.load_run(tmp_path / "hf.gwrun")
    readings = run.signals
    assert [r.step for r in readings] == [1, 2, 3]  # optimizer steps; the last micro-batch's forward pass
    assert readings[0].blocks == ("transformer.h.0", "transformer.h.1")
    assert all(np.isfinite(r.max_logit).all() and np.isfinite(r.entropy).all() for r in readings)
    # log Z of the output's logits: near ln(32) for a fresh model whose logits are small
    assert abs(readings[0].log_z - np.log(32)) < 0.5
    off = GradientLoggerCallback(tmp_path / "off.gwrun", every=1, signals=False)  # passed through to the logger
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[off]).train()
    assert gw.load_run(tmp_path / "off.gwrun").signals == []


def test_lightning_callback_records_signals_under_optimizer_steps(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from _models import TinyGPT

    from gradwidgets.integrations.lightning import GradientLoggerCallback

    torch.manual_seed(0)
    gpt = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=2)
    tokens = torch.randint(0, 32, (16, 9), generator=torch.Generator().manual_seed(0))

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = gpt

        def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
            idx = batch[0]
            logits = self.gpt(idx[:, :-1])
            return nn.functional.cross_entropy(logits.reshape(-1, 32), idx[:, 1:].reshape(-1))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=4, shuffle=False)
    callback = GradientLoggerCallback(tmp_path / "pl.gwrun", every=2)
    trainer = pl.Trainer(
        max_steps=4, accumulate_grad_batches=1, accelerator="cpu", devices=1, logger=False, callbacks=[callback],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Module(), loader)
    run = gw.load_run(tmp_path / "pl.gwrun")
    assert run.steps.tolist() == [1, 2, 4]
    assert [r.step for r in run.signals] == [1, 2, 4] and run.signals[0].blocks == ("gpt.h.0", "gpt.h.1")


def test_huggingface_callback_gives_the_trainers_scheduler_to_the_signals(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from gradwidgets.integrations.huggingface import GradientLoggerCallback

    model, data, args = tiny_gpt2_training(transformers, tmp_path, samples=12, warmup_steps=200)
    on = GradientLoggerCallback(tmp_path / "hf.gwrun", every=1)
    given: list[bool] = []

    class Check(transformers.TrainerCallback):  # runs after ours: the logger is still open
        def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):  # type: ignore[no-untyped-def]
            given.append(on.logger is not None and on.logger.signals.scheduler is lr_scheduler)

    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[on, Check()]).train()
    assert given == [True, True, True]
    readings = gw.load_run(tmp_path / "hf.gwrun").signals
    assert [r.step for r in readings] == [1, 2, 3]
    for reading in readings:  # HF's linear warm-up: optimizer step s runs at 1e-3 * (s - 1) / 200
        assert reading.lr == pytest.approx(1e-3 * (reading.step - 1) / 200, abs=1e-15)
        assert reading.lr_ahead == pytest.approx(1e-3 * (reading.step + 99) / 200, rel=1e-12)
    # The Trainer's AdamW sits inside accelerate's wrapper: its momentum is read from the real optimizer.
    assert np.isnan(readings[0].momentum_cos).all() and np.isfinite(readings[-1].momentum_cos).all()


def lightning_gpt_fit(tmp_path: Path, schedulers: Any, steps: int = 4, every: int = 1) -> tuple[Any, Any]:
    """A TinyGPT LightningModule fitted ``steps`` optimizer steps with Adam(lr=1e-2) and what ``schedulers(opt)``
    returns as its lr_scheduler configs; returns (callback, the fitted module)."""
    pl = pytest.importorskip("lightning.pytorch")
    from _models import TinyGPT

    from gradwidgets.integrations.lightning import GradientLoggerCallback

    torch.manual_seed(0)
    tokens = torch.randint(0, 32, (4 * steps, 9), generator=torch.Generator().manual_seed(0))

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=2)

        def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
            idx = batch[0]
            return nn.functional.cross_entropy(self.gpt(idx[:, :-1]).reshape(-1, 32), idx[:, 1:].reshape(-1))

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-2)
            return {"optimizer": optimizer, "lr_scheduler": schedulers(optimizer)}

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=4, shuffle=False)
    callback = GradientLoggerCallback(tmp_path / "pl.gwrun", every=every)
    module = Module()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, callbacks=[callback], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, loader)
    return callback, module


def test_lightning_callback_gives_a_per_step_scheduler_to_the_signals(tmp_path: Path) -> None:
    def warmup(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 300))
        return {"scheduler": schedule, "interval": "step", "frequency": 1}

    lightning_gpt_fit(tmp_path, warmup)
    readings = gw.load_run(tmp_path / "pl.gwrun").signals
    assert [r.step for r in readings] == [1, 2, 3, 4]
    for reading in readings:  # optimizer step s at lr 1e-2 * s / 300; 100 scheduler steps on: (s + 100) / 300
        assert reading.lr == pytest.approx(1e-2 * reading.step / 300, rel=1e-12)
        assert reading.lr_ahead == pytest.approx(1e-2 * (reading.step + 100) / 300, rel=1e-12)
    assert np.isnan(readings[0].momentum_cos).all() and np.isfinite(readings[-1].momentum_cos).all()


@pytest.mark.parametrize(
    "config",
    [{"interval": "epoch", "frequency": 1}, {"interval": "step", "frequency": 2}],
    ids=["per epoch", "every 2nd step"],
)
def test_lightning_callback_passes_no_scheduler_that_is_not_stepped_once_per_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, config: dict[str, Any]
) -> None:
    def schedule(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / 10), **config}

    with caplog.at_level(logging.DEBUG, logger="gradwidgets.integrations.lightning"):
        lightning_gpt_fit(tmp_path, schedule, steps=2)
    said = [r.getMessage() for r in caplog.records if "no scheduler stepped once per optimizer step" in r.getMessage()]
    assert len(said) == 1 and f"interval='{config['interval']}'" in said[0] and "LambdaLR" in said[0]
    readings = gw.load_run(tmp_path / "pl.gwrun").signals
    assert [r.step for r in readings] == [1, 2] and all(math.isnan(r.lr_ahead) for r in readings)


def test_huggingface_callback_passes_no_scheduler_the_trainer_steps_on_metrics() -> None:
    pytest.importorskip("transformers")
    from transformers.optimization import GreedyLR

    from gradwidgets.integrations.huggingface import _per_step_scheduler

    optimizer = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    assert _per_step_scheduler(plateau) is None and _per_step_scheduler(None) is None
    assert _per_step_scheduler(GreedyLR(optimizer)) is None
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    assert _per_step_scheduler(warmup) is warmup
