import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    command = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    result = subprocess.run(
        [*command, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True
    )
    if result.returncode != 0 and "No module named ruff" in result.stderr:
        pytest.fail("ruff is part of the test extra: pip install -e '.[test]'")
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_never_imports_widget_code():
    """The torch core must stay usable in scripts and threads with no Jupyter around."""
    code = (
        "import sys, gradwidgets as gw; "
        "gw.TrainingSession(depth=2).step(); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'bqplot', 'traitlets')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
