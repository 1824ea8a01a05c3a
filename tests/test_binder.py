"""Binder's recipe, checked here: a fresh virtualenv built from ``binder/requirements.txt`` runs a tutorial.

Binder (repo2docker) runs ``pip install -r binder/requirements.txt`` from the repository root in a Python set by
``binder/runtime.txt``. This test does the same in a brand-new venv (no system site-packages, so a missing
dependency fails here and not in front of a class), leaving out only the PyTorch CPU index line, which this
machine cannot reach: the pinned ``torch==...+cpu`` then comes from the local wheel cache. It then checks what
Binder's two links need (Voila's server extension, the widget front ends) and executes notebook 01 with the
venv's own kernel. Slow (about a minute, mostly pip), but part of the default suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _servers import ARTIFACTS, NOTEBOOKS, ROOT

BINDER = ROOT / "binder"
UNREACHABLE_HERE = re.compile(r"download\.pytorch\.org")


def requirement_lines() -> list[str]:
    return [line.strip() for line in (BINDER / "requirements.txt").read_text().splitlines()]


def test_requirements_pin_the_cpu_build_and_install_the_package() -> None:
    lines = [line for line in requirement_lines() if line and not line.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    torch_pins = [line for line in lines if re.match(r"torch\b", line)]
    assert len(torch_pins) == 1 and torch_pins[0].endswith("+cpu"), "a CUDA torch is gigabytes"
    assert any(re.match(r"voila\b", line) for line in lines), "the dashboard badge needs Voila"
    assert "." in lines or "-e ." in lines, "the package itself"


def test_voila_json_denies_the_extensions_the_cli_denies() -> None:
    """Binder (and any server started in the repository) serves the dashboard through Voila's server extension,
    which reads ``voila.json`` from the working directory, not the CLI's flags: both must deny the same JupyterLab
    extensions that fail outside JupyterLab (the Binder browser test checks the console stays clean)."""
    from gradwidgets.dashboard.cli import FOREIGN_EXTENSIONS

    config = json.loads((ROOT / "voila.json").read_text())
    assert config["VoilaConfiguration"]["extension_denylist"] == list(FOREIGN_EXTENSIONS)


def test_runtime_is_a_python_the_package_supports() -> None:
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-3\.(\d+)", runtime)
    assert match, runtime
    pyproject = (ROOT / "pyproject.toml").read_text()
    minimum = int(re.search(r'requires-python = ">=3\.(\d+)"', pyproject).group(1))
    assert int(match.group(1)) >= minimum


def run(command: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 900) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


NOTEBOOK_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    import nbformat
    from nbclient import NotebookClient
    path, out = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys, gradwidgets, torch; print('WHERE', sys.prefix, gradwidgets.__file__, torch.__version__)"))
    started = time.monotonic()
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(__import__('pathlib').Path(path).parent)}}).execute()
    nbformat.write(nb, out)
    print(json.dumps({"seconds": time.monotonic() - started}))
    """
)


@pytest.mark.slow
def test_fresh_venv_from_binder_requirements_runs_a_tutorial(tmp_path: Path) -> None:
    started = time.monotonic()
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "JUPYTER"))}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1"})
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter-data")  # no user-level kernelspec may shadow the venv's
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "jupyter-config")
    run([sys.executable, "-m", "venv", str(venv)], env)
    python = venv / "bin" / "python"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(line for line in requirement_lines() if not UNREACHABLE_HERE.search(line)))
    run([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)], env)
    installed = time.monotonic() - started

    check = "import torch, gradwidgets, voila; print(torch.__version__, gradwidgets.__file__)"
    where = run([str(python), "-c", check], env, cwd=tmp_path).split()  # not the repo root: its source would win
    assert where[0].endswith("+cpu"), where
    assert Path(where[1]).resolve().is_relative_to(venv.resolve()), "gradwidgets must come from the venv"
    # A non-editable install has no notebooks/ folder: the console script writes the dashboard notebook itself.
    dry_run = run([str(venv / "bin" / "gradwidgets"), "dashboard", "--dry-run"], env, cwd=tmp_path).split()
    assert dry_run[:3] == [str(python), "-m", "gradwidgets.dashboard.server"], dry_run  # Voila with the guards
    assert dry_run[3].endswith("/dashboard.ipynb"), dry_run
    assert not Path(dry_run[3]).exists(), "the generated notebook is removed when the command ends"
    extensions = run([str(venv / "bin" / "jupyter"), "server", "extension", "list"], env, cwd=tmp_path)
    extensions += subprocess.run([str(venv / "bin" / "jupyter"), "server", "extension", "list"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True).stderr
    extensions = re.sub(r"\x1b\[[0-9;]*m", "", extensions)  # colour codes
    assert re.search(r"voila\.server_extension\s+enabled", extensions), extensions
    assert re.search(r"voila\.server_extension\s+OK", extensions), extensions
    labextensions = venv / "share" / "jupyter" / "labextensions"
    for frontend in ("bqplot", "@jupyter-widgets/jupyterlab-manager"):
        assert (labextensions / frontend).is_dir(), f"{frontend} front end missing: widgets would not draw"

    out = tmp_path / "executed.ipynb"
    report = run([str(python), "-c", NOTEBOOK_RUNNER, str(NOTEBOOKS / "01_what_vanishes.ipynb"), str(out)], env,
                 cwd=tmp_path)
    executed = json.loads(report.strip().splitlines()[-1])
    text = out.read_text()
    assert "sigmoid, depth 10: first/last gradient ratio" in text
    assert f"WHERE {venv}" in text or f"WHERE {venv.resolve()}" in text
    total = time.monotonic() - started
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings-binder.json").write_text(
        json.dumps({"venv_and_pip_s": round(installed, 1), "notebook_s": round(executed["seconds"], 1),
                    "total_s": round(total, 1)}, indent=2)
    )
