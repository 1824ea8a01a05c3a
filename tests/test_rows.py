"""The one row map (``core.layout.RowMap``): which parameter belongs to which row, in which order, with which
aliases; and the sharded reader reading through it exactly what the probe reads (one process, no process group:
the all-reduce is skipped, everything else runs). The 2-process FSDP2 runs are in tests/test_distributed.py."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradwidgets as gw
from gradwidgets.core.distributed import ShardedReader
from gradwidgets.core.layout import FlowOrder, RowMap, flow_from_names, flow_to_names, module_kind

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _dist_worker as worker  # noqa: E402


def forward_once(kind: str, model: nn.Module) -> None:
    xs, ys = worker.data(kind)
    worker.loss_of(kind, model, xs[0], ys[0], 0)


def assert_every_parameter_once(row_map: RowMap, model: nn.Module) -> None:
    assert sorted(map(id, row_map.params)) == sorted(map(id, model.parameters()))  # each Parameter, once
    for i, row in enumerate(row_map.rows):
        assert [p for p, owner in zip(row_map.params, row_map.owner, strict=True) if owner == i] == row.params
    np.testing.assert_array_equal(row_map.param_count(), [sum(p.numel() for p in r.params) for r in row_map.rows])


def test_tied_weights_belong_to_the_row_the_data_reaches_first_and_the_other_is_its_alias():
    model = worker.make_model("gpt")  # lm_head (tied to wte) is declared first
    flow = FlowOrder(model)
    registered = RowMap.of(model)
    assert registered.names[0] == "lm_head" and "wte" not in registered.names
    assert registered.aliases[0] == "wte"
    assert flow.take() is None  # no forward pass yet
    forward_once("gpt", model)
    order = flow.take()
    assert order is not None and flow.take() is None  # handed out once
    flowing = RowMap.of(model, order)
    assert flowing.names[:2] == ("wte", "wpe") and flowing.names[-1] == "ln_f" and "lm_head" not in flowing.names
    assert flowing.aliases[0] == "lm_head" and flowing.params[0] is model.wte.weight
    # MultiheadAttention's out_proj is used through its weight, never called: it follows its attention module.
    assert flowing.names[flowing.names.index("h.0.attn") + 1] == "h.0.attn.out_proj"
    for row_map in (registered, flowing):
        assert_every_parameter_once(row_map, model)


def test_a_stacked_rnn_gives_a_row_per_layer_and_direction_owning_that_layers_parameters():
    model = worker.make_model("lstm")
    row_map = RowMap.of(model)
    assert row_map.names == ("head", "lstm.l0", "lstm.l1") and row_map.kinds == ("Linear", "LSTM", "LSTM")
    named = dict(model.lstm.named_parameters())
    for k in (0, 1):
        expected = [named[f"{w}_{g}_l{k}"] for w in ("weight", "bias") for g in ("ih", "hh")]
        assert sorted(map(id, row_map.rows[1 + k].params)) == sorted(map(id, expected))
    assert_every_parameter_once(row_map, model)
    gru = nn.GRU(3, 5, num_layers=2, bidirectional=True)
    assert RowMap.of(gru).names == ("l0", "l0_reverse", "l1", "l1_reverse")
    assert [len(r.params) for r in RowMap.of(gru).rows] == [4, 4, 4, 4]


def test_rank_zeros_order_travels_by_module_name():
    model = worker.make_model("gpt")
    flow = FlowOrder(model)
    forward_once("gpt", model)
    names = flow_to_names(model, flow.take())
    assert names[:2] == ["wte", "wpe"]
    other = copy.deepcopy(model)  # another process's model: same names, other objects
    assert RowMap.of(other, flow_from_names(other, names)).names == RowMap.of(model, flow.order).names


def test_kinds_are_the_models_own_classes_under_fsdp2s_wrapper_class():
    fsdp_module = type("FSDPModule", (), {"__module__": "torch.distributed.fsdp._fully_shard._fully_shard"})
    wrapped = type("FSDPLSTM", (fsdp_module, nn.LSTM), {"__module__": "torch.distributed.fsdp._fully_shard._fsdp_init"})
    lstm = nn.LSTM(2, 3, num_layers=2)
    lstm.__class__ = wrapped  # what fully_shard does to a module
    assert module_kind(lstm) == "LSTM"
    assert RowMap.of(lstm).kinds == ("LSTM", "LSTM") and RowMap.of(lstm).names == ("l0", "l1")


def same_reading(got: gw.GradientStats, expected: gw.GradientStats) -> None:
    assert (got.names, got.kinds, got.roles, got.aliases) == (
        expected.names,
        expected.kinds,
        expected.roles,
        expected.aliases,
    )
    np.testing.assert_array_equal(got.blocks, expected.blocks)
    for field in ("param_count", "grad_norm", "grad_mean_abs", "grad_max_abs", "weight_norm"):
        np.testing.assert_allclose(getattr(got, field), getattr(expected, field), rtol=1e-12, err_msg=field)
    for field in ("has_grad", "had_grad", "frozen"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
    assert (got.step, got.detail_step, got.skipped, got.grad_scale) == (
        expected.step,
        expected.detail_step,
        expected.skipped,
        expected.grad_scale,
    )
    np.testing.assert_equal(got.loss, expected.loss)


@pytest.mark.parametrize("kind", ["mlp", "gpt", "lstm", "branchy"])
def test_the_sharded_reader_reads_what_the_probe_reads(kind: str):
    model = worker.make_model(kind)
    probe = gw.GradientProbe(model, detail_every=3)
    sharded = ShardedReader(model, detail_every=3)
    verdicts = []

    def read_both(step: int, loss: torch.Tensor) -> None:
        expected = probe.read(loss, step=step + 1)
        got = sharded.read(loss, step=step + 1)
        same_reading(got, expected)
        kinds = [gw.diagnose(s, history=range(step + 1)).kind for s in (got, expected)]
        assert kinds[0] == kinds[1], kinds
        verdicts.append(kinds[0])

    worker.train(kind, model, read_both)
    if kind == "branchy":  # the unused branch (zero_grad(set_to_none=False)) is unused, not dead
        assert verdicts == ["healthy", "unused", "healthy", "unused"]
    if kind == "lstm":
        assert probe.names == sharded.names == ("lstm.l0", "lstm.l1", "head")


def test_the_sharded_reader_divides_by_the_loss_scale_and_reports_skipped_steps_as_the_probe():
    model = worker.make_model("mlp")
    probe, sharded = gw.GradientProbe(model), ShardedReader(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    xs, ys = worker.data("mlp")
    scaler.scale(worker.loss_of("mlp", model, xs[0], ys[0], 0)).backward()
    expected = probe.read(scaler=scaler)
    same_reading(sharded.read(scaler=scaler), expected)
    assert expected.grad_scale == 1024.0 and not expected.skipped
    model[0].weight.grad[0, 0] = float("inf")
    reading = sharded.read(scaler=scaler)
    same_reading(reading, probe.read(scaler=scaler))
    assert reading.skipped and gw.diagnose(reading).kind == "skipped"
