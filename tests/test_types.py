"""The type checker over the package: mypy with the configuration in pyproject.toml (strict on the torch core and
the runtime, mypy's defaults plus ``check_untyped_defs`` elsewhere), run as CI runs it."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT_PACKAGES = {"gradwidgets.nets.*", "gradwidgets.core.*", "gradwidgets.runtime.*"}
STRICT_FLAGS = ("disallow_untyped_defs", "disallow_incomplete_defs", "disallow_any_generics", "warn_return_any")


def mypy_config() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def mypy_overrides() -> list[dict[str, Any]]:
    return mypy_config()["overrides"]


def module_file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@pytest.mark.slow  # a minute from a cold cache (it reads torch's annotations), seconds after that
def test_mypy_is_clean():
    result = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0 and "No module named mypy" in result.stderr:
        pytest.fail("mypy is part of the test extra: pip install -e '.[test]'")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_core_and_the_runtime_are_checked_strictly():
    strict = [o for o in mypy_overrides() if set(o["module"]) == STRICT_PACKAGES]
    assert len(strict) == 1, "one override holds the strict flags for nets, core and runtime"
    assert all(strict[0].get(flag) is True for flag in STRICT_FLAGS), strict[0]


def test_no_module_of_the_package_has_its_errors_ignored():
    """The temporary ignore list of the structure issue is burnt down: every module is checked."""
    ignored = [m for o in mypy_overrides() if o.get("ignore_errors") for m in o["module"]]
    assert ignored == [], f"pyproject.toml ignores mypy's errors in {ignored}: type them instead"


def test_missing_third_party_types_are_ignored_by_name_not_globally():
    assert "ignore_missing_imports" not in mypy_config()
    ignored = [m for o in mypy_overrides() if o.get("ignore_missing_imports") for m in o["module"]]
    assert ignored and not any(m.startswith("gradwidgets") for m in ignored), ignored
