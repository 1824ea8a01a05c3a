"""Run the labelled diagnosis benchmark (issue 19) against whatever ``gradwidgets`` is on the path.

    python benchmarks/diagnosis/run.py [--only PATTERN] [--family NAME] [--jobs 2] [--seed 0] [--out results.csv]

Prints precision / recall per label and macro-F1 for ``gw.diagnose`` and the AUTOTRAINER and DeepDiagnosis
rules on the same checkpoints, every wrong gradwidgets verdict, the programs whose label its outcome check did
not confirm (excluded from the scores), and as its last line the one-line summary. Writes the table to ``--out``
and one row per checkpoint to ``<out stem>_checkpoints.csv``.
"""

from __future__ import annotations

import argparse
import fnmatch
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.append(str(ROOT))  # appended: a gradwidgets on PYTHONPATH (another worktree) still wins

import pandas as pd  # noqa: E402

from benchmarks.diagnosis import (  # noqa: E402
    common,
    family_adapters,
    family_hf,
    family_nets,
    family_resnet,
    family_torch,
)
from benchmarks.diagnosis.baselines import BASELINES  # noqa: E402
from benchmarks.diagnosis.harness import ProgramOutcome, evaluate_program, kind_to_label  # noqa: E402
from benchmarks.diagnosis.score import combined, false_alarms, macro_f1, per_label  # noqa: E402

FAMILIES = {
    "nets": family_nets,
    "torch": family_torch,
    "hf": family_hf,
    "resnet": family_resnet,
    "lora": family_adapters,
}
TOOL = "gradwidgets"
_PROGRAMS: list = []
_SEED = {"value": 0}


def all_programs(only: str | None = None, family: str | None = None) -> list:
    """Every program, filtered by ``family`` (a key of FAMILIES) and ``only`` (glob or substring of the name)."""
    if family is not None and family not in FAMILIES:
        raise SystemExit(f"--family must be one of {sorted(FAMILIES)}, got {family!r}")
    chosen = []
    for key, module in FAMILIES.items():
        if family is not None and key != family:
            continue
        for program in module.programs():
            if only and not (fnmatch.fnmatch(program.name, only) or only in program.name):
                continue
            chosen.append(program)
    return chosen


def _work(index: int) -> ProgramOutcome:
    return evaluate_program(_PROGRAMS[index], _SEED["value"])


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run(programs: list, jobs: int, seed: int = 0) -> list[ProgramOutcome]:
    """Evaluate ``programs`` over ``jobs`` forked processes (one torch thread each), in the programs' order;
    ``seed`` changes every program's data and init (a held-out draw of the same programs)."""
    global _PROGRAMS
    _PROGRAMS = programs
    _SEED["value"] = seed
    common.set_seed(seed)
    if jobs <= 1:
        _init_worker()
        return [_work(i) for i in range(len(programs))]
    with multiprocessing.get_context("fork").Pool(jobs, initializer=_init_worker, maxtasksperchild=8) as pool:
        return list(pool.imap(_work, range(len(programs)), chunksize=1))


def checkpoint_rows(outcomes: list[ProgramOutcome]) -> pd.DataFrame:
    rows = []
    for outcome in outcomes:
        if not outcome.confirmed:
            continue
        for point in outcome.checkpoints:
            row = {
                "program": point.program,
                "family": point.family,
                "case": outcome.case,
                "checkpoint": point.checkpoint,
                "step": point.step,
                "truth": point.truth,
                "kind": point.kind,
                TOOL: kind_to_label(point.kind),
                "message": point.message,
            }
            for name, rule in BASELINES.items():
                row[name] = rule(point)
            rows.append(row)
    return pd.DataFrame(rows)


def report(outcomes: list[ProgramOutcome], out: Path, seconds: float) -> str:
    """Print the table, the wrong verdicts and the unconfirmed programs; return the summary line."""
    frame = checkpoint_rows(outcomes)
    confirmed = [o for o in outcomes if o.confirmed]
    unconfirmed = [o for o in outcomes if not o.confirmed]
    if frame.empty:
        print("no confirmed program to score")
        return "diagnosis benchmark: 0 programs, gradwidgets macro-F1 nan, AUTOTRAINER rules nan, DeepDiagnosis rules nan, false alarms on healthy 0/0"  # noqa: E501
    truth = frame["truth"].tolist()
    tools = {TOOL: frame[TOOL].tolist(), **{name: frame[name].tolist() for name in BASELINES}}
    table = combined(truth, tools)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(f"\nPrecision (P), recall (R) and F1 per label over {len(frame)} checkpoints "
          f"({len(confirmed)} programs x init and trained):")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    flat = table.copy()
    flat.columns = [f"{a} {b}" for a, b in flat.columns]
    flat.to_csv(out, float_format="%.4f")
    frame.to_csv(out.with_name(out.stem + "_checkpoints.csv"), index=False)

    wrong = frame[frame[TOOL] != frame["truth"]]
    print(f"\nWrong gradwidgets verdicts ({len(wrong)} of {len(frame)} checkpoints):")
    for row in wrong.itertuples():
        case = f" [case {int(row.case)}]" if pd.notna(row.case) else ""
        message = " ".join(str(row.message).split())[:220]
        print(f"  {row.program} @ {row.checkpoint} (step {row.step}){case}: truth {row.truth}, verdict {row.kind}"
              f" -- {message}")
    print(f"\nLabel not confirmed (excluded from the scores): {len(unconfirmed)}")
    for o in unconfirmed:
        print(f"  {o.program} {o.labels}: {' '.join(o.detail.split())[:300]}")
    if not family_hf.available():
        print("Skipped: the Hugging Face programs (transformers is not installed)")
    slowest = sorted(outcomes, key=lambda o: -o.seconds)[:5]
    print(f"\nWall time {seconds:.0f} s; slowest programs: "
          + ", ".join(f"{o.program} {o.seconds:.1f} s" for o in slowest))
    print(f"Table written to {out}")

    scores = {name: macro_f1(per_label(truth, predicted)) for name, predicted in tools.items()}
    alarms, healthy = false_alarms(truth, tools[TOOL])
    return (
        f"diagnosis benchmark: {len(confirmed)} programs, gradwidgets macro-F1 {scores[TOOL]:.2f}, "
        f"AUTOTRAINER rules {scores['AUTOTRAINER rules']:.2f}, DeepDiagnosis rules "
        f"{scores['DeepDiagnosis rules']:.2f}, false alarms on healthy {alarms}/{healthy}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only programs whose name matches this glob (or contains it)")
    parser.add_argument("--family", help=f"run only one family: {', '.join(FAMILIES)}")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and init (0: the calibrated draw)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results.csv")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit(f"--jobs must be a positive integer, got {args.jobs}")
    if args.seed < 0:
        raise SystemExit(f"--seed must be a non-negative integer, got {args.seed}")
    import gradwidgets

    programs = all_programs(args.only, args.family)
    print(f"gradwidgets from {Path(gradwidgets.__file__).parent}; {len(programs)} programs, {args.jobs} jobs, "
          f"seed {args.seed}")
    start = time.perf_counter()
    outcomes = run(programs, args.jobs, args.seed)
    line = report(outcomes, args.out, time.perf_counter() - start)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
