"""The diagnosis benchmark (benchmarks/diagnosis): its programs, outcome checks, baselines and scores."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks.diagnosis import common, run  # noqa: E402
from benchmarks.diagnosis.baselines import autotrainer, deepdiagnosis  # noqa: E402
from benchmarks.diagnosis.harness import LABELS, Checkpoint, evaluate_program, kind_to_label, run_program  # noqa: E402
from benchmarks.diagnosis.score import false_alarms, macro_f1, per_label  # noqa: E402

FAST = (
    "nets/mlp-relu-he-d4",
    "nets/mlp-dead-layer",
    "nets/mlp-relu-zero-grad-end-none",
    "nets/mlp-unused-aux-head",
    "lora/mlp-r4-lr1e-7",
)


@pytest.fixture(scope="module")
def programs() -> list:
    return run.all_programs()


def test_the_benchmark_has_what_issue_19_asks_for(programs: list) -> None:
    names = [p.name for p in programs]
    assert len(names) == len(set(names))
    assert len(programs) >= 80
    assert len({p.family for p in programs}) >= 5
    assert sum(1 for p in programs if p.labels == ("healthy", "healthy")) >= 25
    for position in (0, 1):  # every label is the truth at init and after training somewhere
        assert {p.labels[position] for p in programs} == set(LABELS)
    assert {p.case for p in programs if p.case is not None} == set(range(1, 14))
    for p in programs:  # every label comes with the outcome check that confirms it
        assert callable(p.check), p.name
        assert set(p.labels) <= set(LABELS), p.name


@pytest.mark.parametrize("name", FAST)
def test_programs_run_end_to_end_and_their_labels_are_confirmed(programs: list, name: str) -> None:
    program = next(p for p in programs if p.name == name)
    outcome = evaluate_program(program)
    assert outcome.confirmed, outcome.detail
    assert [c.checkpoint for c in outcome.checkpoints] == ["init", "trained"]
    assert [c.truth for c in outcome.checkpoints] == list(program.labels)
    assert [c.step for c in outcome.checkpoints] == [0, program.steps]
    for point in outcome.checkpoints:
        assert point.kind != "error", point.message
        assert autotrainer(point) in LABELS and deepdiagnosis(point) in LABELS
        assert len(point.losses) == point.step + 1


def test_an_outcome_check_fails_when_the_outcome_contradicts_the_label(programs: list) -> None:
    """The lr=1e-7 program does not learn: as "healthy" it is not confirmed, and its check fails when its twin
    is the same broken program."""
    program = next(p for p in programs if p.name == "lora/mlp-r4-lr1e-7")
    result = run_program(program, judge=False)
    ok, detail = common.healthy()(result, lambda: result)
    assert not ok and "learns" in detail
    ok, detail = program.check(result, lambda: result)
    assert not ok and "FAILED twin" in detail


def test_dead_check_measures_the_layer_output() -> None:
    program = next(p for p in run.all_programs(only="nets/mlp-dead-layer"))
    result = run_program(program, judge=False)
    assert result.dead_fraction == {"init": 1.0, "trained": 1.0}
    fixed = run_program(program, fixed=True, judge=False)  # the twin keeps its biases: its units are alive
    assert fixed.dead_fraction["init"] < 0.5


def _point(first: float, last: float, zero: float = 0.0, losses: list[float] | None = None) -> Checkpoint:
    point = Checkpoint("p", "f", "init", 0, "healthy", losses=losses or [1.0])
    point.layers = [
        {"name": "a", "requires_grad": True, "numel": 10, "grad_norm": first, "zero_frac": zero, "finite": True},
        {"name": "b", "requires_grad": True, "numel": 10, "grad_norm": last, "zero_frac": zero, "finite": True},
    ]
    return point


def test_autotrainer_rules() -> None:
    assert autotrainer(_point(1e-6, 1e-2)) == "vanishing"  # ratio 1e-4 < 1e-3 and first 1e-6 < 1e-4
    assert autotrainer(_point(1e-3, 10.0)) == "healthy"  # ratio 1e-4 but the first layer's norm is not < 1e-4
    assert autotrainer(_point(71.0, 1.0)) == "exploding"
    assert autotrainer(_point(1.0, 1.0, zero=0.7)) == "dead"
    assert autotrainer(_point(1.0, 1.0, losses=[1.0, float("nan")])) == "exploding"
    assert autotrainer(_point(1.0, 1.0, losses=[1.0] * 10)) == "lr_too_small"
    assert autotrainer(_point(1.0, 1.0, losses=[1.0, 2.0] * 5)) == "diverging"
    assert autotrainer(_point(1.0, 1.0, losses=[1.0 - 0.05 * i for i in range(10)])) == "healthy"


def test_deepdiagnosis_rules() -> None:
    assert deepdiagnosis(_point(1.0, 1.0, losses=[float("inf")])) == "diverging"
    assert deepdiagnosis(_point(1.0, 2e3)) == "exploding"
    assert deepdiagnosis(_point(1e-5, 1.0)) == "vanishing"
    point = _point(1.0, 1.0)
    point.acts = [{"kind": "relu", "dead_unit_frac": 0.75, "sat_frac": 0.0, "max_abs": 1.0}]
    assert deepdiagnosis(point) == "dead"
    point.acts = [{"kind": "sigmoid", "dead_unit_frac": 0.0, "sat_frac": 0.8, "max_abs": 1.0}]
    assert deepdiagnosis(point) == "vanishing"
    assert deepdiagnosis(_point(1.0, 1.0, losses=[1.0] + [1.1] * 9)) == "lr_too_small"
    assert deepdiagnosis(_point(1.0, 1.0, losses=[1.0 - 0.05 * i for i in range(10)])) == "healthy"


def test_scores_match_a_hand_count() -> None:
    truth = ["healthy", "healthy", "dead", "vanishing"]
    predicted = ["healthy", "dead", "dead", None]
    table = per_label(truth, predicted)
    assert table.loc["healthy", "precision"] == 1.0 and table.loc["healthy", "recall"] == 0.5
    assert table.loc["dead", "precision"] == 0.5 and table.loc["dead", "recall"] == 1.0
    assert table.loc["vanishing", "f1"] == 0.0
    # F1: healthy 2/3, dead 2/3, vanishing 0 -> mean over the three labels present
    assert math.isclose(macro_f1(table), (2 / 3 + 2 / 3 + 0) / 3)
    assert false_alarms(truth, predicted) == (1, 2)


def test_kind_mapping() -> None:
    assert kind_to_label("nonfinite") == "diverging"
    assert kind_to_label("skipped") == "healthy"
    assert kind_to_label("inconclusive") is None
    assert kind_to_label("eps_limited") == "eps_limited"
    assert kind_to_label("something_new") is None


def test_cli_runs_and_ends_with_the_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.set_num_threads(1)
    assert run.main(["--only", "nets/mlp-unused-aux-head", "--jobs", "1", "--out", str(tmp_path / "r.csv")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("diagnosis benchmark: 1 programs, gradwidgets macro-F1 ")
    assert "false alarms on healthy 0/0" in lines[-1]
    assert (tmp_path / "r.csv").exists() and (tmp_path / "r_checkpoints.csv").exists()


def test_seed_changes_the_data_draw() -> None:
    first = common.tabular("moons")[0](0)[0]
    try:
        common.set_seed(1)
        other = common.tabular("moons")[0](0)[0]
    finally:
        common.set_seed(0)
    assert not torch.equal(first, other)
    assert torch.equal(first, common.tabular("moons")[0](0)[0])
