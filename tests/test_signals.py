"""InstabilitySignals against plain PyTorch: the largest attention logit, the attention entropy and log Z on each
supported attention kind (nn.MultiheadAttention in the project's transformer and in the test GPT, Hugging Face
GPT-2, Llama with grouped-query attention and rotary embeddings, q_norm/k_norm attention), the update ratio and
gradient RMS, gradient-momentum cosine and learning rate given the optimizer, the scheduler's outlook
(scheduled_lr_peak against a stepped copy), cadence, removal, that a failing hook never raises into the loop, and
warn_unstable's rules on hand-built histories."""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _models import TinyGPT, causal_mask
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw
from gradwidgets.core import signals as signals_module
from gradwidgets.core.signals import (
    LOGIT_LIMIT,
    InstabilityReading,
    InstabilitySignals,
    attention_kind,
    scheduled_lr_peak,
    warn_unstable,
)

transformers = pytest.importorskip("transformers")


def reference(logits: torch.Tensor) -> tuple[float, float]:
    """(largest finite logit, mean entropy) of attention logits (batch, heads, Lq, Lk) with -inf where masked."""
    logits = logits.detach().double()
    p = torch.softmax(logits, dim=-1)
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    return float(logits[torch.isfinite(logits)].max()), float(entropy.mean())


def probs_entropy(p: torch.Tensor) -> float:
    p = p.double()
    return float(-(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1).mean())


def mha_logits(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q k^T / sqrt(d) of a batch-first nn.MultiheadAttention with its own (unfused) weights."""
    e, h = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = (x @ w[:e].T + b[:e]).view(x.shape[0], x.shape[1], h, -1).transpose(1, 2)
    k = (x @ w[e : 2 * e].T + b[e : 2 * e]).view(x.shape[0], x.shape[1], h, -1).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(e // h)
    return logits if mask is None else logits.masked_fill(mask, float("-inf"))


def test_tiny_gpt_with_nn_multihead_attention_matches_plain_torch() -> None:
    torch.manual_seed(0)
    model = TinyGPT(vocab=40, width=32, heads=4, context=12, depth=3)
    signals = InstabilitySignals(model, sample=2, every=1)
    idx = torch.randint(0, 40, (5, 12))
    inputs: list[torch.Tensor] = []
    hooks = [b.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0][:2].detach())) for b in model.h]
    logits = model(idx)
    for hook in hooks:
        hook.remove()
    reading = signals.read()
    assert isinstance(reading, InstabilityReading)
    assert reading.blocks == ("h.0", "h.1", "h.2")
    for i, (block, x) in enumerate(zip(model.h, inputs, strict=True)):
        largest, entropy = reference(mha_logits(block.attn, x, causal_mask(12)))
        assert reading.max_logit[i] == pytest.approx(largest, rel=1e-4, abs=1e-6)
        assert reading.entropy[i] == pytest.approx(entropy, rel=1e-4)
    log_z = torch.logsumexp(logits[:2].double(), dim=-1)
    assert reading.log_z == pytest.approx(float(log_z.mean()), rel=1e-5)
    assert reading.log_z_max == pytest.approx(float(log_z.max()), rel=1e-5)
    assert np.isnan(reading.update_ratio).all() and math.isnan(reading.eps)


def test_project_transformer_entropy_equals_the_weights_nn_multihead_attention_returns() -> None:
    torch.manual_seed(1)
    cfg = gw.NetConfig(kind="transformer", depth=2, width=16, heads=2, seq_len=6)
    model = gw.build_model(cfg, in_features=3, out_features=4)
    signals = InstabilitySignals(model, sample=3, every=1)
    inputs: list[torch.Tensor] = []
    hooks = [b.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0][:3].detach())) for b in model.blocks]
    model(torch.randn(4, 6, 3))
    for hook in hooks:
        hook.remove()
    reading = signals.read()
    assert reading is not None and reading.blocks == ("blocks.0", "blocks.1")
    for i, (block, x) in enumerate(zip(model.blocks, inputs, strict=True)):
        w = block.attn(x, x, x, need_weights=True, average_attn_weights=False)[1].detach()
        assert reading.entropy[i] == pytest.approx(probs_entropy(w), rel=1e-4)
    assert np.isfinite(reading.max_logit).all()


def small_gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=16, attn_pdrop=0.0, resid_pdrop=0.0,
        embd_pdrop=0.0, bos_token_id=0, eos_token_id=0, attn_implementation="eager",
    )
    torch.manual_seed(2)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # larger weights than the init so that logits are far from zero and entropy from uniform
        for block in model.transformer.h:
            block.attn.c_attn.weight.mul_(40)
    return model.train()


def test_hugging_face_gpt2_matches_its_own_attention_weights_and_a_plain_recomputation() -> None:
    model = small_gpt2()
    signals = InstabilitySignals(model, sample=2, every=1)
    idx = torch.randint(0, 50, (3, 10))
    hidden: list[torch.Tensor] = []
    hooks = [b.attn.c_attn.register_forward_hook(lambda m, a, o: hidden.append(o[:2].detach()))
             for b in model.transformer.h]
    out = model(idx, output_attentions=True)
    for hook in hooks:
        hook.remove()
    reading = signals.read()
    assert reading is not None and reading.blocks == ("transformer.h.0", "transformer.h.1")
    for i, (qkv, attentions) in enumerate(zip(hidden, out.attentions, strict=True)):
        q, k, _ = qkv.view(2, 10, 3, 2, 8).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(causal_mask(10), float("-inf"))
        largest, entropy = reference(logits)
        assert reading.max_logit[i] == pytest.approx(largest, rel=1e-4)
        assert reading.entropy[i] == pytest.approx(entropy, rel=1e-4)
        assert reading.entropy[i] == pytest.approx(probs_entropy(attentions[:2]), rel=1e-4)
    assert reading.max_logit.max() > 1.0  # the scaled weights give logits well away from zero
    assert reading.log_z == pytest.approx(float(torch.logsumexp(out.logits[:2].double(), -1).mean()), rel=1e-5)


def test_llama_with_grouped_query_attention_and_rope_matches_its_attention_weights() -> None:
    config = transformers.LlamaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64,
        vocab_size=50, bos_token_id=0, eos_token_id=0, pad_token_id=0, attn_implementation="eager",
    )
    torch.manual_seed(3)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
            layer.self_attn.k_proj.weight.mul_(30)
    model.train()
    assert attention_kind(model.model.layers[0].self_attn) == "qk_proj"
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    signals = InstabilitySignals(model, sample=2, every=1)
    calls: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = []

    def grab(module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        cos, sin = kwargs["position_embeddings"]  # type: ignore[misc]
        calls.append((hidden[:2].detach(), (cos[:2], sin[:2])))  # type: ignore[index]

    hooks = [layer.self_attn.register_forward_pre_hook(grab, with_kwargs=True) for layer in model.model.layers]
    out = model(torch.randint(0, 50, (3, 9)), output_attentions=True)
    for hook in hooks:
        hook.remove()
    reading = signals.read()
    assert reading is not None and reading.blocks == ("model.layers.0", "model.layers.1")
    layers = zip(model.model.layers, calls, out.attentions, strict=True)
    for i, (layer, (hidden, (cos, sin)), attentions) in enumerate(layers):
        attn = layer.self_attn
        q = attn.q_proj(hidden).view(2, 9, 4, 8).transpose(1, 2)
        k = attn.k_proj(hidden).view(2, 9, 2, 8).transpose(1, 2)
        q, k = llama.apply_rotary_pos_emb(q, k, cos, sin)
        k = llama.repeat_kv(k, 2)
        logits = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(causal_mask(9), float("-inf"))
        largest, entropy = reference(logits)
        assert reading.max_logit[i] == pytest.approx(largest, rel=1e-4)
        assert reading.entropy[i] == pytest.approx(entropy, rel=1e-4)
        assert reading.entropy[i] == pytest.approx(probs_entropy(attentions[:2]), rel=1e-4)
    assert reading.log_z == pytest.approx(float(torch.logsumexp(out.logits[:2].double(), -1).mean()), rel=1e-5)


class NormedAttention(nn.Module):
    """q_proj/k_proj attention with per-head LayerNorm on q and k (qk-layernorm), causal."""

    def __init__(self, width: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.head_dim, self.heads, self.is_causal = width // heads, heads, True
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.q_norm, self.k_norm = nn.LayerNorm(self.head_dim), nn.LayerNorm(self.head_dim)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:2], self.heads, self.head_dim)
        q = self.q_norm(self.q_proj(x).view(shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(shape)).transpose(1, 2)
        return (q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)).masked_fill(causal_mask(x.shape[1]), -math.inf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.logits(x), -1)
        v = self.v_proj(x).view(*x.shape[:2], self.heads, self.head_dim).transpose(1, 2)
        return (p @ v).transpose(1, 2).reshape(x.shape)


def test_qk_normed_attention_is_measured_after_its_norms() -> None:
    torch.manual_seed(4)
    model = nn.Sequential(NormedAttention(), nn.Linear(16, 7))
    signals = InstabilitySignals(model, sample=3, every=1)
    x = torch.randn(4, 5, 16) * 3
    out = model(x)
    reading = signals.read()
    assert reading is not None and reading.blocks == ("0",)
    largest, entropy = reference(model[0].logits(x[:3]).detach())
    assert reading.max_logit[0] == pytest.approx(largest, rel=1e-4)
    assert reading.entropy[0] == pytest.approx(entropy, rel=1e-4)
    assert reading.log_z == pytest.approx(float(torch.logsumexp(out[:3].double(), -1).mean()), rel=1e-5)


def test_update_ratio_and_gradient_rms_against_plain_torch_and_the_cadence() -> None:
    torch.manual_seed(5)
    model = TinyGPT(vocab=30, width=16, heads=2, context=8, depth=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-7)
    signals = InstabilitySignals(model, sample=2, every=3, optimizer=optimizer)
    for step in range(7):
        idx = torch.randint(0, 30, (4, 8))
        loss = F.cross_entropy(model(idx).reshape(-1, 30), idx.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        block = [p for p in model.h[1].parameters()]
        before = torch.cat([p.detach().reshape(-1).clone() for p in block])
        grads = torch.cat([p.grad.reshape(-1) for p in block])
        optimizer.step()
        after = torch.cat([p.detach().reshape(-1) for p in block])
        if step == 6:
            reading = signals.read()
            assert reading is not None and reading.step == 6
            assert reading.update_ratio[1] == pytest.approx(float((after - before).norm() / before.norm()), rel=1e-4)
            assert reading.grad_rms[1] == pytest.approx(float(grads.square().mean().sqrt()), rel=1e-5)
            assert reading.eps == 1e-7
    assert [r.step for r in signals.history] == [0, 3, 6]
    model.eval()
    model(torch.randint(0, 30, (4, 8)))
    assert len(signals.history) == 3  # evaluation passes are not training steps


def test_remove_takes_every_hook_out() -> None:
    torch.manual_seed(6)
    model = TinyGPT(vocab=30, width=16, heads=2, context=8, depth=2)
    optimizer = torch.optim.Adam(model.parameters())

    def hook_count() -> int:
        modules = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        return modules + len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks)

    empty = hook_count()
    signals = InstabilitySignals(model, every=1, optimizer=optimizer)
    assert hook_count() > empty
    signals.remove()
    assert hook_count() == empty
    model(torch.randint(0, 30, (2, 8)))
    assert signals.read() is None


def test_a_failing_measurement_logs_once_and_never_raises(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(7)
    model = TinyGPT(vocab=30, width=16, heads=2, context=8, depth=2)
    signals = InstabilitySignals(model, every=1)
    real = signals_module.attention_statistics

    def fails_on_the_first_block(q: torch.Tensor, *args: object) -> tuple[float, float]:
        if q.shape[0] == 2 and fails_on_the_first_block.calls % 2 == 0:  # type: ignore[attr-defined]
            fails_on_the_first_block.calls += 1  # type: ignore[attr-defined]
            raise RuntimeError("measurement broke")
        fails_on_the_first_block.calls += 1  # type: ignore[attr-defined]
        return real(q, *args)  # type: ignore[arg-type]

    fails_on_the_first_block.calls = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(signals_module, "attention_statistics", fails_on_the_first_block)
    with caplog.at_level(logging.WARNING, logger="gradwidgets.core.signals"):
        for _ in range(3):
            out = model(torch.randint(0, 30, (2, 8)))
            out.sum().backward()
    assert sum("attention hook failed" in r.getMessage() for r in caplog.records) == 1
    reading = signals.read()
    assert reading is not None and math.isnan(reading.max_logit[0]) and np.isfinite(reading.max_logit[1])


@pytest.mark.parametrize("field,value", [("sample", 0), ("every", -1), ("every", 1.5), ("sample", True)])
def test_arguments_are_validated_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        InstabilitySignals(nn.Linear(2, 2), **{field: value})  # type: ignore[arg-type]


def readings(
    max_logits: list[list[float]],
    log_z: list[float] | None = None,
    every: int = 5,
    log_z_max: list[float] | None = None,
) -> list[InstabilityReading]:
    """A history of readings ``every`` steps apart with these per-block largest logits (blocks h.0, h.1, ...), mean
    log Z and largest log Z (the mean where not given)."""
    blocks = tuple(f"h.{i}" for i in range(len(max_logits[0])))
    nan = np.full(len(blocks), np.nan)
    mean = [math.nan] * len(max_logits) if log_z is None else log_z
    largest = mean if log_z_max is None else log_z_max
    return [
        InstabilityReading(
            step=i * every, blocks=blocks, max_logit=np.array(row, dtype=float), entropy=nan, log_z=mean[i],
            log_z_max=largest[i], update_ratio=nan, grad_rms=nan, eps=math.nan,
        )
        for i, row in enumerate(max_logits)
    ]


def test_warns_on_attention_logit_growth_naming_the_block_and_qk_layernorm() -> None:
    history = readings([[5.0, 20.0], [6.0, 40.0], [6.0, 60.0], [7.0, 90.0], [7.0, 130.0], [7.0, 300.0]])
    assert warn_unstable(history[:4]) is None  # below the limit
    warning = warn_unstable(history)
    assert warning is not None and warning.kind == "unstable" and warning.signal == "max_logit"
    assert warning.block == "h.1" and warning.step == 25
    assert warning.value == 300.0 and warning.baseline == 40.0  # the reading 20 steps earlier
    assert "qk-layernorm" in warning.fix and "h.1" in warning.message


def test_large_but_steady_logits_and_short_histories_are_no_warning() -> None:
    steady = readings([[2 * LOGIT_LIMIT, 3 * LOGIT_LIMIT]] * 6)
    assert warn_unstable(steady) is None
    assert warn_unstable(readings([[1.0], [10 * LOGIT_LIMIT]])) is None  # fewer than 20 steps of history
    assert warn_unstable([]) is None


def test_warns_on_log_z_divergence_with_z_loss() -> None:
    history = readings([[1.0]] * 6, log_z=[5.0, 6.0, 8.0, 12.0, 20.0, 40.0])
    warning = warn_unstable(history)
    assert warning is not None and warning.signal == "log_z" and warning.block == "output"
    assert "z-loss" in warning.fix and warning.value == 40.0
    assert warn_unstable(readings([[1.0]] * 6, log_z=[40.0] * 6)) is None  # large but not moving


def test_log_z_reads_the_mean_not_one_positions_outlier() -> None:
    """The shapes of the benchmark's 'log Z drift, head x10+bias' run (steps 200-230, still learning: loss 0.91 ->
    0.87) and of its z-loss lr-1 run as it diverged (steps 105-135, loss 3.2 -> 19.6): the largest log Z wanders
    past 30 by 7 in 20 steps in both, the mean moves only in the diverging one. Reading the largest warned on the
    drift (a false alarm at step 230 there)."""
    drift = readings([[1.0]] * 7, log_z=[13.1, 13.3, 13.5, 13.7, 14.5, 13.4, 14.7],
                     log_z_max=[24.9, 23.4, 24.7, 27.7, 26.7, 24.3, 32.1])
    assert warn_unstable(drift) is None
    diverging = readings([[1.0]] * 7, log_z=[6.5, 8.1, 8.5, 10.8, 13.4, 21.4, 31.1],
                         log_z_max=[9.1, 13.6, 13.9, 20.4, 16.4, 29.7, 36.9])
    warning = warn_unstable(diverging)
    assert warning is not None and warning.signal == "log_z" and warning.block == "output"
    assert warning.value == 31.1 and warning.baseline == 8.5  # the mean 20 steps earlier
    assert warn_unstable(diverging[:6]) is None  # the mean below 30 until then


class PaddedAttention(nn.Module):
    """A sequence-first nn.MultiheadAttention called with a float attention mask and a boolean padding mask."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(12, 3)
        self.mask = torch.triu(torch.full((5, 5), -2.0), 1)  # soft: later keys count less, never forbidden
        self.padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.attn(x, x, x, key_padding_mask=self.padding, attn_mask=self.mask)[0]
        return out


def test_sequence_first_multihead_attention_with_float_and_padding_masks() -> None:
    torch.manual_seed(8)
    model = PaddedAttention()
    with torch.no_grad():
        model.attn.in_proj_weight.mul_(4)
    signals = InstabilitySignals(model, sample=3, every=1)
    x = torch.randn(5, 3, 12)  # (length, batch, width)
    model(x)
    reading = signals.read()
    assert reading is not None and reading.blocks == ("attn",)
    weights = model.attn(x, x, x, key_padding_mask=model.padding, attn_mask=model.mask, need_weights=True,
                         average_attn_weights=False)[1].detach()
    assert reading.entropy[0] == pytest.approx(probs_entropy(weights), rel=1e-4)
    xb = x.transpose(0, 1)
    logits = mha_logits(model.attn, xb, None) + model.mask
    logits = logits.masked_fill(model.padding[:, None, None, :], float("-inf"))
    assert reading.max_logit[0] == pytest.approx(reference(logits)[0], rel=1e-4)


# ---------------------------------------------------------------------------------------------- in run files


def a_reading(step: int = 3) -> InstabilityReading:
    return InstabilityReading(
        step=step, blocks=("h.0", "h.1"), max_logit=np.array([12.5, np.nan]), entropy=np.array([1.5, 0.25]),
        log_z=4.0, log_z_max=5.5, update_ratio=np.array([np.nan, 1e-3]), grad_rms=np.array([1e-4, 2e-4]), eps=1e-8,
    )


def test_a_reading_round_trips_through_a_run_file_and_old_records_have_none(tmp_path) -> None:
    from gradwidgets.core.runfile import RunRecord, RunWriter

    path = tmp_path / "signals.gwrun"
    with RunWriter(path) as writer:
        writer.write_header({"names": ["a", "b"]})
        writer.append(RunRecord(step=1, arrays={"grad_norm": np.array([1.0, 2.0])}))  # as files before signals
        writer.append(RunRecord(step=3, arrays={"grad_norm": np.array([1.0, 2.0])}, signals=(a_reading(),)))
    run = gw.load_run(path)
    assert run.records[0].signals == ()
    (back,) = run.signals
    original = a_reading()
    assert back.step == 3 and back.blocks == ("h.0", "h.1") and back.eps == 1e-8 and back.log_z_max == 5.5
    for name in InstabilityReading.PER_BLOCK:
        np.testing.assert_array_equal(getattr(back, name), getattr(original, name))
    table = run.signals_to_pandas()
    assert list(table["block"]) == ["h.0", "h.1"] and list(table["step"]) == [3, 3]
    assert table["entropy"].tolist() == [1.5, 0.25] and table["log_z"].tolist() == [4.0, 4.0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"step": "3"}, "step"),
        ({"blocks": "h.0"}, "blocks"),
        ({"max_logit": [1.0]}, "max_logit"),
        ({"entropy": [1.0, "x"]}, "entropy"),
        ({"log_z": [1.0]}, "log_z"),
        ({"eps": True}, "eps"),
    ],
)
def test_a_forged_reading_is_refused_naming_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"'{field}'"):
        InstabilityReading.from_dict(a_reading().to_dict() | change)


def test_a_run_file_with_forged_signals_is_a_run_file_error(tmp_path) -> None:
    import json
    import struct

    from gradwidgets.core.runfile.format import JSON_LENGTH, StepDecoder

    head = json.dumps({"step": 1, "arrays": [], "signals": [a_reading().to_dict() | {"max_logit": [1.0] * 3}]})
    payload = JSON_LENGTH.pack(len(head)) + head.encode()
    with pytest.raises(ValueError, match="max_logit"):
        StepDecoder(2).decode(payload)
    head = json.dumps({"step": 1, "arrays": [], "signals": {"step": 1}})
    with pytest.raises(ValueError, match="'signals' must be a list"):
        StepDecoder(2).decode(struct.pack("<I", len(head)) + head.encode())
    missing = {k: v for k, v in a_reading().to_dict().items() if k not in ("grad_rms", "eps")}  # a newer writer
    reading = InstabilityReading.from_dict(missing)
    assert np.isnan(reading.grad_rms).all() and math.isnan(reading.eps)


def test_the_unstable_verdict_replaces_a_healthy_one_but_not_a_diverged_one() -> None:
    from gradwidgets.core.signals import InstabilityWarning, unstable_verdict

    warning = InstabilityWarning(kind="unstable", block="h.2", signal="max_logit", step=30, value=309.0,
                                 baseline=4.5, fix="add qk-layernorm", message="unstable: h.2's largest logit grew")
    healthy = gw.Diagnosis(kind="healthy", message="fine", fix="", ratio=1.2, compared=("h.0", "h.5"))
    verdict = unstable_verdict(healthy, warning)
    assert (verdict.kind, verdict.layers, verdict.fix, verdict.ratio) == ("unstable", ("h.2",), "add qk-layernorm", 1.2)
    assert verdict.headline.startswith("Unstable") and verdict.message == "h.2's largest logit grew"
    assert gw.Diagnosis.from_dict(verdict.to_dict()) == verdict  # a run file keeps it
    nonfinite = gw.Diagnosis(kind="nonfinite", message="inf", fix="", ratio=math.nan)
    assert unstable_verdict(nonfinite, warning) is nonfinite
    assert unstable_verdict(healthy, None) is healthy


def test_a_wrapper_whose_own_forward_is_never_called_still_measures_its_model_with_log_z() -> None:
    class Wrapper(nn.Module):  # like a LightningModule: training_step calls self.gpt(...), not self(...)
        def __init__(self) -> None:
            super().__init__()
            self.gpt = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=2)

    torch.manual_seed(0)
    wrapper = Wrapper()
    signals = InstabilitySignals(wrapper, every=1)
    idx = torch.randint(0, 32, (4, 8))
    logits = wrapper.gpt(idx)
    (reading,) = signals.history
    assert reading.blocks == ("gpt.h.0", "gpt.h.1")
    assert reading.log_z == pytest.approx(float(torch.logsumexp(logits.detach(), -1).mean()), rel=1e-5)
    with pytest.raises(IndexError):  # a forward pass that raises half-way never ends ...
        wrapper.gpt(torch.full((4, 8), 99))
    wrapper.gpt(idx)  # ... and the next one is measured all the same
    assert len(signals.history) == 2 and np.isfinite(signals.history[-1].max_logit).all()


def _benchmark_model() -> Any:
    """benchmarks/instability/model.py (SmallGPT, the copy task), loaded under its own name."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "instability" / "model.py"
    spec = importlib.util.spec_from_file_location("instability_benchmark_model", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spike(losses: list[float]) -> int | None:
    """run.py's spike: the 5-step mean above 1.25x its running minimum once it dropped below 0.8x its start."""
    means = [float(np.mean(losses[max(0, i - 4) : i + 1])) for i in range(len(losses))]
    lowest, dropped = means[0], False
    for step, value in enumerate(means):
        dropped = dropped or value < 0.8 * means[0]
        if dropped and value > 1.25 * lowest:
            return step
        lowest = min(lowest, value)
    return None


@pytest.mark.parametrize("qk_norm", [False, True])
def test_a_real_attention_logit_divergence_is_warned_20_steps_ahead_and_its_twin_is_not(qk_norm: bool) -> None:
    """Tutorial 08's small GPT (2 blocks, width 32, Adam (0.9, 0.95), warm-up 200 to lr 0.3, 240 steps, the
    benchmark's copy task): without qk-layernorm its attention logits grow and the loss spikes, and warn_unstable
    fires on a block's attention logit >= 20 steps before the spike; the qk-layernorm twin neither spikes nor warns."""
    bench = _benchmark_model()
    torch.manual_seed(0)
    model = bench.SmallGPT(64, 32, 2, 32, 2, qk_norm=qk_norm)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.3, betas=(0.9, 0.95))
    signals = InstabilitySignals(model, every=10, optimizer=optimizer)
    table, gen, losses = bench.successor_table(64, 4, seed=123), torch.Generator().manual_seed(1), []
    first = None
    for step in range(240):
        for group in optimizer.param_groups:
            group["lr"] = 0.3 * min(1.0, (step + 1) / 200)
        idx = bench.copy_batch(gen, table, 8, 16)
        loss = F.cross_entropy(model(idx[:, :-1]).reshape(-1, 64), idx[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        first = first or warn_unstable(signals.history)
    signals.remove()
    spike = _spike(losses)
    if qk_norm:
        assert spike is None and first is None, (spike, first)
        return
    assert spike is not None and first is not None, (spike, first)
    assert first.signal == "max_logit" and first.block.startswith("h.") and "qk-layernorm" in first.fix
    assert spike - first.step >= 20, (spike, first.step)


# ------------------------------------------------------------ the optimizer's momentum, the lr and the schedule


def momentum_cos_by_hand(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], key: str) -> float:
    """cos(concatenated gradients, concatenated optimizer momentum ``key``) read before the step; NaN without it."""
    momenta = [optimizer.state.get(p, {}).get(key) for p in params]
    if any(m is None for m in momenta):
        return math.nan
    grads = torch.cat([p.grad.reshape(-1) for p in params]).double()
    momentum = torch.cat([m.reshape(-1) for m in momenta]).double()
    return float(F.cosine_similarity(grads, momentum, dim=0))


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda params: torch.optim.Adam(params, lr=1e-2), "exp_avg"),
        (lambda params: torch.optim.SGD(params, lr=1e-1, momentum=0.9), "momentum_buffer"),
        (lambda params: torch.optim.SGD(params, lr=1e-1), "momentum_buffer"),  # no momentum: never a cosine
    ],
)
def test_momentum_cos_and_lr_equal_plain_torch_before_each_step(make: Any, key: str) -> None:
    torch.manual_seed(11)
    model = TinyGPT(vocab=30, width=16, heads=2, context=8, depth=2)
    optimizer = make(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / 10)
    signals = InstabilitySignals(model, every=1, optimizer=optimizer)
    expected_cos, expected_lr = [], []
    for _ in range(4):
        idx = torch.randint(0, 30, (4, 8))
        loss = F.cross_entropy(model(idx).reshape(-1, 30), idx.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        expected_cos.append([momentum_cos_by_hand(optimizer, list(block.parameters()), key) for block in model.h])
        expected_lr.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    got = np.array([r.momentum_cos for r in signals.history])
    assert np.isnan(got[0]).all()  # no momentum before the first step
    np.testing.assert_allclose(got, np.array(expected_cos), rtol=1e-4, atol=1e-6)
    momentum = bool(optimizer.param_groups[0].get("momentum", 0.9))  # Adam's exp_avg is a momentum
    assert np.isfinite(got[1:]).all() == momentum and np.isnan(got[1:]).all() == (not momentum)
    assert [r.lr for r in signals.history] == pytest.approx(expected_lr) and expected_lr[0] != expected_lr[-1]
    assert all(math.isnan(r.lr_ahead) for r in signals.history)  # no scheduler given: no outlook


def peak_by_stepping(scheduler: Any, optimizer: torch.optim.Optimizer, steps: int) -> float:
    """The largest first-group lr a deep copy of the real optimizer and scheduler reaches, stepped ``steps`` times."""
    scheduler, optimizer = copy.deepcopy((scheduler, optimizer))
    peak = optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            optimizer.step()
            scheduler.step()
            peak = max(peak, optimizer.param_groups[0]["lr"])
    return float(peak)


def two_groups() -> torch.optim.Optimizer:
    layer = nn.Linear(3, 2)
    return torch.optim.AdamW([{"params": [layer.weight]}, {"params": [layer.bias], "lr": 0.5}], lr=1.0)


LR = torch.optim.lr_scheduler
SCHEDULES = {
    "warm-up": lambda opt: LR.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 50)),
    "one-cycle": lambda opt: LR.OneCycleLR(opt, max_lr=[2.0, 1.0], total_steps=300),
    "linear then cosine": lambda opt: LR.SequentialLR(
        opt, [LR.LinearLR(opt, 0.1, 1.0, total_iters=20), LR.CosineAnnealingLR(opt, 50)], milestones=[20]
    ),
    "chained": lambda opt: LR.ChainedScheduler(
        [LR.LinearLR(opt, 0.1, 1.0, total_iters=30), LR.ExponentialLR(opt, 0.99)]
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("steps", [10, 25])
def test_scheduled_lr_peak_is_what_a_copied_scheduler_reaches_and_the_real_one_is_untouched(
    name: str, steps: int
) -> None:
    optimizer = two_groups()
    scheduler = SCHEDULES[name](optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):  # part-way into the schedule
            optimizer.step()
            scheduler.step()
    last_epoch, last_lr = getattr(scheduler, "last_epoch", None), scheduler.get_last_lr()
    lrs = [g["lr"] for g in optimizer.param_groups]
    expected = peak_by_stepping(scheduler, optimizer, steps)
    assert expected > lrs[0]  # the schedule does rise: the peak is not the current lr
    assert scheduled_lr_peak(scheduler, steps) == pytest.approx(expected, rel=1e-12)
    assert getattr(scheduler, "last_epoch", None) == last_epoch and scheduler.get_last_lr() == last_lr
    assert [g["lr"] for g in optimizer.param_groups] == lrs
    assert peak_by_stepping(scheduler, optimizer, steps) == expected  # stepping the real pair again: the same


def test_scheduled_lr_peak_is_nan_for_a_scheduler_that_needs_a_metric() -> None:
    optimizer = two_groups()
    assert math.isnan(scheduled_lr_peak(LR.ReduceLROnPlateau(optimizer), 10))


class ScheduledModel(nn.Module):
    """A model whose learning-rate schedule is its own bound method (a pattern Lightning users write)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 64)
        self.seen: list[nn.Module] = []

    def warmup(self, step: int) -> float:
        self.seen.append(self)
        return min(1.0, (step + 1) / 20)


def test_a_schedule_bound_to_the_model_steps_with_the_model_itself_not_a_copy() -> None:
    model = ScheduledModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    scheduler = LR.LambdaLR(optimizer, model.warmup)
    model.seen.clear()
    assert scheduled_lr_peak(scheduler, 5, share=[model]) == pytest.approx(6 / 20)
    assert len(model.seen) == 5 and all(seen is model for seen in model.seen)
    model.seen.clear()
    scheduled_lr_peak(scheduler, 5)  # without sharing it: the copy steps with a copy of the model
    assert not model.seen
    signals = InstabilitySignals(model, optimizer=optimizer, scheduler=scheduler)  # the signals share the model
    assert any(shared is model for shared in signals._shared)



def test_given_only_the_scheduler_the_signals_read_its_optimizer() -> None:
    torch.manual_seed(0)
    model = TinyGPT(vocab=16, width=8, heads=2, context=6, depth=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = LR.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10))
    signals = InstabilitySignals(model, every=1, scheduler=scheduler)  # no optimizer=
    assert signals.optimizer is optimizer
    for _ in range(2):
        idx = torch.randint(0, 16, (3, 6))
        F.cross_entropy(model(idx).reshape(-1, 16), idx.reshape(-1)).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    latest = signals.history[-1]
    assert latest.lr == pytest.approx(0.02) and latest.lr_ahead == pytest.approx(0.1)
    assert np.isfinite(latest.momentum_cos).all() and np.isfinite(latest.update_ratio).all()
    signals.remove()


# ------------------------------------------------------------------------------------------ the edge rule


def edge_readings(
    cos: list[float], lr: float = 1e-3, lr_ahead: float = 3e-3, every: int = 5, count: int = 6
) -> list[InstabilityReading]:
    """``count`` readings ``every`` steps apart, blocks h.0, h.1 ... with these gradient-momentum cosines, at
    learning rate ``lr`` with ``lr_ahead`` the schedule's peak ahead; calm attention logits and log Z."""
    blocks = tuple(f"h.{i}" for i in range(len(cos)))
    nan = np.full(len(blocks), np.nan)
    return [
        InstabilityReading(
            step=i * every, blocks=blocks, max_logit=np.full(len(blocks), 5.0), entropy=nan, log_z=3.0,
            log_z_max=4.0, update_ratio=nan, grad_rms=nan, eps=1e-8, momentum_cos=np.array(cos, dtype=float),
            lr=lr, lr_ahead=lr_ahead,
        )
        for i in range(count)
    ]


def test_edge_rule_fires_while_oscillating_under_a_rising_schedule_and_names_the_lowest_block() -> None:
    warning = warn_unstable(edge_readings([-0.1, -0.52], lr=1e-3, lr_ahead=2e-3))  # mean -0.31, exactly x2
    assert warning is not None and warning.kind == "unstable" and warning.signal == "edge"
    assert warning.block == "h.1" and warning.step == 25
    assert warning.value == pytest.approx(-0.31) and warning.baseline == 1e-3
    assert "warm" in warning.fix and "h.1" in warning.message and "0.002" in warning.message
    verdict = signals_module.unstable_verdict(gw.Diagnosis(kind="healthy", message="", fix="", ratio=1.0), warning)
    assert verdict.kind == "unstable" and verdict.layers == ("h.1",)


@pytest.mark.parametrize(
    "history",
    [
        edge_readings([-0.29, -0.29]),  # not oscillating enough
        edge_readings([-0.6, -0.6], lr=1e-3, lr_ahead=1.9e-3),  # the schedule rises too little
        edge_readings([-0.6, -0.6], lr_ahead=math.nan),  # no scheduler: no outlook
        edge_readings([-0.6, -0.6], lr=math.nan),  # no optimizer: no learning rate
        edge_readings([-0.6, -0.6])[:4],  # fewer than 20 steps of history
    ],
    ids=["cos -0.29", "rise x1.9", "no outlook", "no lr", "short"],
)
def test_edge_rule_stays_quiet_below_its_thresholds(history: list[InstabilityReading]) -> None:
    assert warn_unstable(history) is None


def test_edge_rule_averages_only_the_readings_of_the_last_20_steps() -> None:
    oscillating, calm = edge_readings([-0.9, -0.9]), edge_readings([0.5, 0.5])
    assert warn_unstable(oscillating[:2] + calm[2:]) is None  # steps 0 and 5 oscillated: older than the lookback
    warning = warn_unstable(calm[:2] + oscillating[2:])  # steps 10-25 oscillate: the calm start does not dilute
    assert warning is not None and warning.value == pytest.approx(-0.9)


def test_edge_cosine_is_the_mean_over_the_readings_after_the_one_20_steps_back() -> None:
    history = edge_readings([-0.9, 0.1])[:3] + edge_readings([-0.2, np.nan])[3:]  # steps 0 .. 25
    assert signals_module.reading_before(history, 20) is history[1]  # step 5 = 25 - 20
    mean, per_block = signals_module.edge_cosine(history)
    by_hand = np.array([[-0.9, 0.1], [-0.2, np.nan], [-0.2, np.nan], [-0.2, np.nan]])  # steps 10, 15, 20, 25
    assert mean == pytest.approx(np.nanmean(by_hand))
    np.testing.assert_allclose(per_block, [np.mean(by_hand[:, 0]), 0.1])
    assert math.isnan(signals_module.edge_cosine(history[:4])[0])  # 15 steps of history: nothing 20 back
    assert math.isnan(signals_module.edge_cosine(edge_readings([np.nan, np.nan]))[0])  # never measured


def test_readings_from_before_the_momentum_cosine_never_fire_the_edge_rule() -> None:
    history = edge_readings([-0.6, -0.6])
    assert warn_unstable(history) is not None
    for dropped in (("momentum_cos",), ("momentum_cos", "lr", "lr_ahead")):
        old = [InstabilityReading.from_dict({k: v for k, v in r.to_dict().items() if k not in dropped})
               for r in history]
        assert np.isnan(old[0].momentum_cos).all() and len(old[0].momentum_cos) == 2
        assert warn_unstable(old) is None


def test_a_reading_with_the_momentum_cosine_and_the_lr_outlook_round_trips_through_a_run_file(tmp_path) -> None:
    from gradwidgets.core.runfile import RunRecord, RunWriter

    reading = edge_readings([-0.25, np.nan], lr=3e-4, lr_ahead=9e-4, count=1)[0]
    again = InstabilityReading.from_dict(reading.to_dict())
    np.testing.assert_array_equal(again.momentum_cos, reading.momentum_cos)
    assert (again.lr, again.lr_ahead) == (3e-4, 9e-4)
    path = tmp_path / "edge.gwrun"
    with RunWriter(path) as writer:
        writer.write_header({"names": ["a", "b"]})
        writer.append(RunRecord(step=1, arrays={"grad_norm": np.array([1.0, 2.0])}, signals=(reading,)))
    (back,) = gw.load_run(path).signals
    np.testing.assert_array_equal(back.momentum_cos, [-0.25, np.nan])
    assert (back.lr, back.lr_ahead) == (3e-4, 9e-4)
    table = gw.load_run(path).signals_to_pandas()
    assert {"momentum_cos", "lr", "lr_ahead"} <= set(table.columns)
    np.testing.assert_array_equal(table["momentum_cos"], [-0.25, np.nan])
    assert table["lr"].tolist() == [3e-4, 3e-4] and table["lr_ahead"].tolist() == [9e-4, 9e-4]


def test_a_closure_step_measures_after_the_closure_ran_like_a_plain_step() -> None:
    """Lightning (and LBFGS) run the forward pass and backward() inside ``optimizer.step(closure)``, after the step's
    pre-hook: the signals measure when the closure returns, so the readings equal a plain loop's."""
    got = []
    for mode in ("plain", "positional closure", "keyword closure"):
        torch.manual_seed(12)
        model = TinyGPT(vocab=30, width=16, heads=2, context=8, depth=2)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        signals = InstabilitySignals(model, every=1, optimizer=optimizer)
        gen = torch.Generator().manual_seed(3)
        for _ in range(3):
            idx = torch.randint(0, 30, (4, 8), generator=gen)

            def closure(
                idx: torch.Tensor = idx, model: nn.Module = model, optimizer: torch.optim.Optimizer = optimizer
            ) -> torch.Tensor:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(idx).reshape(-1, 30), idx.reshape(-1))
                loss.backward()
                return loss

            if mode == "plain":
                closure()
                optimizer.step()
            elif mode == "positional closure":
                optimizer.step(closure)
            else:
                optimizer.step(closure=closure)
        got.append(list(signals.history))
    plain = got[0]
    for closed in got[1:]:
        assert [r.step for r in closed] == [r.step for r in plain] == [0, 1, 2]
        for a, b in zip(plain, closed, strict=True):
            for name in ("update_ratio", "grad_rms", "momentum_cos", "max_logit"):
                np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-6)
        assert np.isfinite(closed[-1].momentum_cos).all() and np.isfinite(closed[-1].update_ratio).all()
