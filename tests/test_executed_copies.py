"""The executed copies in ``notebooks/executed/`` are in step with the tutorials (issue 22): a reader on GitHub
sees the numbers of the code that is there. Regenerate them with ``python3 benchmarks/run_tutorials.py``."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = NOTEBOOKS / "executed"
TUTORIALS = sorted(p.name for p in NOTEBOOKS.glob("0*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
REGENERATE = "run `PYTHONPATH=$PWD python3 benchmarks/run_tutorials.py` and commit notebooks/executed/"


def code_cells(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_every_tutorial_has_an_executed_copy_and_no_copy_is_orphaned():
    assert TUTORIALS, "no tutorial found"
    copies = sorted(p.name for p in EXECUTED.glob("*.ipynb"))
    assert copies == TUTORIALS, f"copies {copies} vs tutorials {TUTORIALS}: {REGENERATE}"


@pytest.mark.parametrize("name", TUTORIALS)
def test_executed_copy_has_the_tutorials_code(name: str):
    tutorial, copy = code_cells(NOTEBOOKS / name), code_cells(EXECUTED / name)
    for index, (expected, found) in enumerate(zip(tutorial, copy, strict=False)):
        assert found == expected, f"{name}: code cell {index} differs from the tutorial: {REGENERATE}"
    assert len(copy) == len(tutorial), f"{name}: {len(copy)} code cells, the tutorial has {len(tutorial)}"


@pytest.mark.parametrize("name", TUTORIALS)
def test_executed_copy_ran_every_cell_and_shows_its_numbers(name: str):
    notebook = nbformat.read(EXECUTED / name, as_version=4)
    nbformat.validate(notebook)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]
    assert all(cell.execution_count is not None for cell in cells), f"{name}: a cell did not run: {REGENERATE}"
    outputs = [output for cell in cells for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{name}: a cell raised"
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert any(ch.isdigit() for ch in printed), f"{name}: no printed number"
    assert "widgets" not in notebook.metadata and WIDGET_VIEW not in json.dumps(outputs), "widget state kept"
    assert (EXECUTED / name).stat().st_size < 500_000, f"{name}: the copy is too large to read on GitHub"
