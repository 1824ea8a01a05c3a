"""DDP, FSDP2 and HSDP on 2 gloo processes (``python -m torch.distributed.run``): rank 0 writes, and the run holds
the single-process probe's rows, order, aliases, masks and numbers for the same model and global batch.

Two references, both in this process: plain torch (per-layer norms straight from ``p.grad``, for the MLP) and
``GradientProbe`` on the unsharded model, trained by the same loop (tests/_dist_worker.py) on the whole global
batch. One launch runs every case (a torchrun start costs seconds on this machine).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gradwidgets as gw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _dist_worker as worker  # noqa: E402

pytestmark = pytest.mark.slow

RUNS = ("ddp:mlp", "fsdp2:mlp", "hsdp:mlp", "fsdp2:gpt", "fsdp2:lstm", "fsdp2:branchy")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(HERE / "_dist_worker.py"), "--runs", ",".join(RUNS), "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=HERE.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def single_process() -> dict[str, np.ndarray]:
    """Plain torch, MLP: per step and layer the gradient norm; at the first step also max |g| and weight norm."""
    model = worker.make_model()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    out: dict[str, list] = {"grad_norm": [], "grad_max_abs": [], "weight_norm": [], "loss": []}

    def measure(step: int, loss: torch.Tensor) -> None:
        out["loss"].append(float(loss.detach()))
        grads = [torch.cat([p.grad.ravel() for p in m.parameters()]) for m in linears]
        out["grad_norm"].append([float(torch.linalg.vector_norm(g)) for g in grads])
        if step == 0:
            out["grad_max_abs"] = [float(g.abs().max()) for g in grads]
            weights = [torch.cat([p.detach().ravel() for p in m.parameters()]) for m in linears]
            out["weight_norm"] = [float(torch.linalg.vector_norm(w)) for w in weights]

    worker.train("mlp", model, measure)
    return {k: np.asarray(v) for k, v in out.items()}


def probe_readings(kind: str) -> list[gw.GradientStats]:
    """``GradientProbe`` on the unsharded model, read at every step of the same loop on the global batch."""
    model = worker.make_model(kind)
    probe = gw.GradientProbe(model)
    readings: list[gw.GradientStats] = []
    worker.train(kind, model, lambda step, loss: readings.append(probe.read(loss, step=step + 1)))
    return readings


def assert_same_as_probe(run: gw.Run, readings: list[gw.GradientStats], motion: bool = False) -> None:
    """Rows, order, aliases, masks, AMP fields, norms (rtol 1e-5) and verdicts of every record equal the probe's.
    ``motion``: also the update ratio and drift (not measured on sharded models). The loss is checked against the
    whole global batch's in the test (the probe here reads it on the global batch too)."""
    first = readings[0]
    assert run.names == first.names
    assert (run.kinds, run.roles, run.aliases) == (first.kinds, first.roles, first.aliases)
    np.testing.assert_array_equal(run.blocks, first.blocks)
    np.testing.assert_array_equal(run.param_count, first.param_count)
    assert len(run) == len(readings)
    fields = ["grad_norm", "grad_mean_abs", "grad_max_abs", "weight_norm"]
    fields += ["update_ratio", "drift"] if motion else []
    for i, expected in enumerate(readings):
        got = run.stats(i)
        assert got.step == expected.step and got.detail_step == expected.detail_step
        for field in fields:
            np.testing.assert_allclose(getattr(got, field), getattr(expected, field), rtol=1e-5, err_msg=field)
        for field in ("has_grad", "had_grad", "frozen"):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
        assert (got.skipped, got.grad_scale) == (expected.skipped, expected.grad_scale)
        verdict = gw.diagnose(expected, history=range(i + 1))
        assert (run.verdicts[i]["kind"], run.verdicts[i]["ratio"]) == (verdict.kind, pytest.approx(verdict.ratio))


@pytest.mark.parametrize("wrap", ["ddp", "fsdp2", "hsdp"])
def test_two_gloo_ranks_record_the_single_process_numbers(wrap: str, runs: Path) -> None:
    run = gw.load_run(runs / f"{wrap}-mlp.gwrun")
    assert run.names == ("0", "2", "4")  # no "module." from DDP
    assert run.meta["world_size"] == 2 and run.meta["sharded"] == (wrap != "ddp")
    assert run.steps.tolist() == list(range(1, worker.STEPS + 1))
    reference = single_process()
    # HSDP: both ranks hold each parameter whole (replicated); counted once, not twice (sqrt(2) too large).
    np.testing.assert_allclose(run.grad_norm, reference["grad_norm"], rtol=1e-5)
    # The detail fields, measured at the first read: sums and maxima over shards also match.
    np.testing.assert_allclose(run.grad_max_abs[0], reference["grad_max_abs"], rtol=1e-5)
    np.testing.assert_allclose(run.weight_norm[0], reference["weight_norm"], rtol=1e-5)
    # The logged loss is the global batch's (the mean over the ranks' equal shares), not rank 0's own.
    assert run.loss_steps.tolist() == list(range(1, worker.STEPS + 1))
    np.testing.assert_allclose(run.losses, reference["loss"], rtol=1e-6)
    assert_same_as_probe(run, probe_readings("mlp"), motion=wrap == "ddp")


def test_fsdp2_tied_gpt_has_the_probes_rows_in_data_flow_order(runs: Path) -> None:
    run = gw.load_run(runs / "fsdp2-gpt.gwrun")
    # The head is declared first and tied to wte: the data reaches wte first, so wte owns the shared weight.
    assert run.names[:2] == ("wte", "wpe") and run.names[-1] == "ln_f" and "lm_head" not in run.names
    assert run.aliases[run.names.index("wte")] == "lm_head"
    assert run.kinds[run.names.index("h.0.mlp.0")] == "Linear"  # not FSDP2's FSDPLinear
    assert run.param_count.sum() == sum(p.numel() for p in worker.make_model("gpt").parameters())
    assert_same_as_probe(run, probe_readings("gpt"))
    assert "(h.0 vs h.1)" in run.verdicts[0]["message"]  # the verdict compares the blocks, not wte with itself


def test_fsdp2_lstm_stack_has_a_row_per_layer(runs: Path) -> None:
    run = gw.load_run(runs / "fsdp2-lstm.gwrun")
    assert run.names == ("lstm.l0", "lstm.l1", "head") and run.kinds == ("LSTM", "LSTM", "Linear")
    lstm = worker.make_model("lstm").lstm
    per_layer = [sum(p.numel() for n, p in lstm.named_parameters() if n.endswith(f"_l{k}")) for k in (0, 1)]
    assert run.param_count[:2].tolist() == per_layer
    assert (run.grad_norm[:, :2] > 0).all()  # both layers measured (before: all on l0, l1 read 0)
    assert_same_as_probe(run, probe_readings("lstm"))


def test_fsdp2_unused_branch_is_unused_not_dead(runs: Path) -> None:
    run = gw.load_run(runs / "fsdp2-branchy.gwrun")
    aux = run.names.index("aux")
    assert [v["kind"] for v in run.verdicts] == ["healthy", "unused", "healthy", "unused"]
    assert run.verdicts[1]["layers"] == ["aux"] and "had one at an earlier step" in run.verdicts[1]["message"]
    assert not run.stats(1).has_grad[aux] and run.stats(1).had_grad[aux]
    assert_same_as_probe(run, probe_readings("branchy"))


def test_one_file_per_run_each_written_once(runs: Path) -> None:
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{r.replace(':', '-')}.gwrun" for r in RUNS)
