"""README's promises: the test command CI runs is the one README shows, and the API tour runs as written."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_line = next(b for b in code_blocks("bash") if "pytest" in b).strip()
    test_command = test_line.split("&&")[-1].strip()
    ci_commands = [
        line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    assert ci_commands[-1] == test_command


def test_dashboard_command_is_a_declared_entry_point():
    run_line = next(b for b in code_blocks("bash") if "dashboard" in b and "pytest" not in b).strip()
    assert run_line.endswith("gradwidgets dashboard")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[project\.scripts\]\ngradwidgets = "gradwidgets\.dashboard\.cli:main"$', pyproject, flags=re.M)


def test_core_api_tour_runs_as_written(capsys):
    block = next(b for b in code_blocks("python") if "TrainingSession(cfg" in b)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "vanishing" in out


def test_readme_names_every_tutorial_that_exists():
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert notebook.stem in README, notebook.name
