"""``gradwidgets watch``: its options are the dashboard's, its notebook only names the paths."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from gradwidgets.dashboard import cli
from gradwidgets.dashboard.watch import watch_notebook_path, watch_source


def test_watch_takes_exactly_the_dashboard_options() -> None:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    options = {name: sorted(o for a in commands[name]._actions for o in a.option_strings) for name in commands}
    assert options["watch"] == options["dashboard"]
    args = parser.parse_args(["watch", "a.gwrun", "runs/", "--port", "9001", "--no-browser", "--theme", "dark"])
    assert (args.paths, args.port, args.no_browser, args.theme) == (["a.gwrun", "runs/"], 9001, True, "dark")


def test_dry_run_serves_a_generated_notebook_with_the_dashboards_voila_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run.gwrun"
    assert cli.main(["watch", str(run), "--dry-run", "--port", "9124", "--no-browser"]) == 0
    output = capsys.readouterr().out.strip()
    command = output.split()
    assert command[1:3] == ["-m", "gradwidgets.dashboard.server"] and command[3].endswith("watch.ipynb")
    assert cli.main(["dashboard", "--dry-run", "--port", "9124", "--no-browser"]) == 0
    dashboard = capsys.readouterr().out.strip().split()

    def options(words: list[str]) -> list[str]:  # the temp root is fresh for every run
        return [w for w in words[4:] if not w.startswith("--Voila.connection_dir_root=")]

    assert options(command) == options(dashboard)  # the very same server options as `gradwidgets dashboard`
    assert any(w.startswith("--Voila.connection_dir_root=") for w in command)
    assert not Path(command[3]).exists()  # the temporary notebook is removed when the command ends


def test_a_path_with_no_folder_to_wait_in_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["watch", str(tmp_path / "nowhere" / "run.gwrun"), "--dry-run"]) == 1
    assert "no run file or folder" in capsys.readouterr().err


def test_the_notebook_holds_the_paths_as_literals_only(tmp_path: Path) -> None:
    odd = tmp_path / "it's \"odd\"; import os.gwrun"
    source = watch_source([odd])
    namespace: dict = {}
    literal = source.split("watch_app(", 1)[1].rsplit(")", 1)[0]
    assert eval(literal, namespace) == str(odd)  # noqa: S307 - checking that it is a plain literal
    with watch_notebook_path([odd]) as path:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.cells[0].source == source
    assert not path.exists()
