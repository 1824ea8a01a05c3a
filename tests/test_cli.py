"""``gradwidgets dashboard`` and the URL-query presets it relies on.

The CLI part starts the real command (a real Voila on a free 127.0.0.1 port) and stops it with Ctrl-C, as a
user would; the preset part feeds hostile and malformed query strings to the parser, which must never raise,
never evaluate anything, and only ever hand on values a ``TrainingSession`` accepts.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import nbformat
import pytest
from _servers import ARTIFACTS, NOTEBOOKS, ROOT, Server, free_port, server_environment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradwidgets as gw
from gradwidgets.dashboard import DASHBOARD_SOURCE, cli, dashboard_notebook, preset_notice
from gradwidgets.dashboard.presets import DASHBOARD_FIELDS, PRESET_FIELDS, parse_query, query_from_environment

# ---------------------------------------------------------------------------------------------- the command


def test_console_script_is_declared() -> None:
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("gradwidgets") == "gradwidgets.dashboard.cli:main"


def test_without_a_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "dashboard" in capsys.readouterr().out


def test_dry_run_shows_a_safe_voila_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dashboard", "--dry-run", "--port", "9123", "--no-browser"]) == 0
    command = capsys.readouterr().out.split()
    assert command[1:3] == ["-m", "gradwidgets.dashboard.server"]  # Voila with the class guards
    assert command[3] == str(NOTEBOOKS / "dashboard.ipynb")
    assert "--port=9123" in command
    assert "--Voila.ip=127.0.0.1" in command  # this machine only, unless the user says otherwise
    assert "--Voila.open_browser=False" in command
    assert "--strip_sources=True" in command and "--show_tracebacks=False" in command


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_bad_port_is_refused(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dashboard", "--port", port])
    assert exit_info.value.code == 2
    assert "port" in capsys.readouterr().err


def test_kernels_get_one_torch_thread_unless_the_user_chose() -> None:
    assert cli.dashboard_environment({})["OMP_NUM_THREADS"] == "1"
    assert cli.dashboard_environment({"OMP_NUM_THREADS": "4"})["OMP_NUM_THREADS"] == "4"


def test_checkout_notebook_is_found_and_matches_the_generated_one() -> None:
    assert cli.find_dashboard() == NOTEBOOKS / "dashboard.ipynb"
    committed = nbformat.read(NOTEBOOKS / "dashboard.ipynb", as_version=4)
    generated = dashboard_notebook()
    assert [c.source for c in committed.cells] == [c.source for c in generated.cells] == [DASHBOARD_SOURCE]
    assert committed.metadata.kernelspec.name == generated.metadata.kernelspec.name == "python3"


def test_installed_package_without_notebooks_writes_the_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "find_dashboard", lambda: None)
    with cli.dashboard_path() as path:
        assert path.is_file() and path.name == "dashboard.ipynb"
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.cells[0].source == DASHBOARD_SOURCE
    assert not path.exists() and not path.parent.exists()  # cleaned up when the server stops


def test_dashboard_command_serves_the_app_and_stops_on_ctrl_c() -> None:
    """README's run command, for real: the page is served on 127.0.0.1 and Ctrl-C stops it cleanly."""
    port = free_port()
    server = Server(
        [sys.executable, "-m", "gradwidgets", "dashboard", "--port", str(port), "--no-browser"],
        port,
        ARTIFACTS / "cli-dashboard.log",
        env=server_environment(),
    )
    try:
        server.wait_listening(timeout=60)
        started = time.monotonic()
        status, body = server.get("?activation=sigmoid&depth=5", timeout=120)
        served = time.monotonic() - started
        assert status == 200, body[:2000]
        assert "gw-dashboard" in body or "application/vnd.jupyter.widget-view+json" in body
        assert "from gradwidgets.dashboard import app" not in body  # sources stripped
        assert "Traceback" not in body
        os.killpg(server.process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert server.process.wait(timeout=30) == 0
        log = server.log()
        assert f"http://127.0.0.1:{port}/" in log
        # a clean start: no warning of ours, Voila's harmless notices filtered (and explained in one line)
        for noise in ("DeprecationWarning", "dashboard.ipynb is not trusted", "Kernel is running over TCP",
                      "Warning: serving plain HTTP"):
            assert noise not in log, noise
        assert "Two harmless notices are hidden" in log
        (ARTIFACTS / "timings-cli.txt").write_text(f"GET with notebook execution: {served:.1f}s\n")
    finally:
        server.stop()


def test_token_guards_the_page_and_the_link_to_share_carries_it() -> None:
    port, token = free_port(), "class-pass-42"
    server = Server(
        [sys.executable, "-m", "gradwidgets", "dashboard", "--port", str(port), "--no-browser", "--token", token,
         "--pool-size", "0"],
        port,
        ARTIFACTS / "cli-dashboard-token.log",
        env=server_environment(),
    )
    try:
        server.wait_listening(timeout=60)
        status, body = server.get("?depth=3", timeout=60)  # no token: Voila's login page, and no kernel
        assert "jupyter-config-data" not in body and "password" in body.lower(), (status, body[:2000])
        assert "Kernel started" not in server.log()
        status, body = server.get(f"?token={token}&depth=3", timeout=120)
        assert status == 200 and "jupyter-config-data" in body, body[:2000]
        log = server.log()
        share = "Share this link with the class (the token is the password)"
        assert f"{share}: http://127.0.0.1:{port}/?token={token}" in log
        # not on the server's or a kernel's command line (``ps``); only where the teacher typed it
        assert token not in " ".join(psutil_cmdlines(server.process.pid))
    finally:
        server.stop()


def psutil_cmdlines(pid: int) -> list[str]:
    """The command lines of ``pid``'s descendants."""
    import psutil

    lines = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            lines.append(" ".join(process.cmdline()))
        except psutil.Error:
            continue
    return lines


def test_plain_http_on_the_network_is_warned_about_and_bad_tokens_refused(capsys: pytest.CaptureFixture[str]) -> None:
    shared = cli._startup_lines("0.0.0.0", 8866, "", preset_hint=False)
    assert any(line.startswith("Warning: serving plain HTTP on 0.0.0.0") and "--token" in line for line in shared)
    assert not any("Warning" in line for line in cli._startup_lines("127.0.0.1", 8866, "", preset_hint=False))
    assert not any("Warning" in line for line in cli._startup_lines("::1", 8866, "", preset_hint=False))
    with_token = cli._startup_lines("10.1.2.3", 8866, "abcdef", preset_hint=True)
    assert any(line.endswith("the password): http://10.1.2.3:8866/?token=abcdef") for line in with_token)
    assert any("?token=abcdef&activation=sigmoid" in line for line in with_token)
    assert cli.main(["dashboard", "--dry-run", "--token", "a b"]) == 2
    assert "--token must be" in capsys.readouterr().err
    assert cli.main(["dashboard", "--dry-run", "--token"]) == 0
    assert "--Voila.auto_token=True" in capsys.readouterr().out
    assert cli.main(["dashboard", "--dry-run", "--max-kernels", "7", "--kernels-per-minute", "0"]) == 0
    out = capsys.readouterr().out
    assert "--GradwidgetsVoila.max_kernels=7" in out and "--GradwidgetsVoila.kernels_per_minute=0" in out
    with pytest.raises(SystemExit):
        cli.main(["dashboard", "--max-kernels", "-1"])


def test_missing_voila_is_explained(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None if name == "voila" else real(name))
    assert cli.main(["dashboard", "--dry-run"]) == 1
    assert "pip install 'gradwidgets[dashboard]'" in capsys.readouterr().err


def test_module_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gradwidgets", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == f"gradwidgets {gw.__version__}"


# ---------------------------------------------------------------------------------------------- URL presets


def test_a_preset_link_sets_fields_of_the_right_types() -> None:
    preset = parse_query("?activation=sigmoid&depth=20&residual=true&lr=0.05&norm=LAYER&play=1&tab=compare")
    assert preset.ok
    assert preset.settings == {"activation": "sigmoid", "depth": 20, "residual": True, "lr": 0.05, "norm": "layer"}
    assert preset.dashboard == {"play": True, "tab": "compare"}
    session = gw.TrainingSession(**preset.settings)
    assert session.config.depth == 20 and session.settings.lr == 0.05


def test_recurrent_and_transformer_presets() -> None:
    rnn = parse_query("kind=rnn&cell=lstm&forget_bias=3&seq_len=50&width=32")
    assert rnn.ok and gw.TrainingSession(**rnn.settings).settings.dataset == "adding"
    transformer = parse_query("kind=transformer&depth=6&residual=false&norm=none")
    assert transformer.ok and gw.TrainingSession(**transformer.settings).config.kind == "transformer"


@pytest.mark.parametrize(
    ("query", "kept", "problem"),
    [
        ("depth=abc", {}, "depth should be a whole number from 1 to 60, got 'abc'"),
        ("depth=9999", {}, "depth should be a whole number"),
        ("width=4096&depth=200", {}, "width should be a whole number from 2 to 512"),
        ("lr=nan", {}, "lr should be a number above 0"),
        ("lr=1e999", {}, "lr should be a number above 0"),
        ("lr=-1", {}, "lr should be a number above 0"),
        ("activation=__import__('os').system('id')", {}, "activation should be one of"),
        ("depth=__import__('os')", {}, "depth should be a whole number"),
        ("residual=maybe", {}, "residual should be true or false"),
        ("foo=1&depth=5", {"depth": 5}, "Unknown setting 'foo' ignored"),
        ("kind=mlp&dataset=adding", {"kind": "mlp"}, "dataset='adding' does not fit"),
        ("kind=transformer&width=30", {"kind": "transformer"}, "width must be a multiple of heads"),
        ("depth=3&depth=4", {"depth": 4}, "depth was given more than once"),
        ("init=identity", {}, "init='identity' does not fit"),
    ],
)
def test_bad_values_are_dropped_with_a_friendly_message(query: str, kept: dict, problem: str) -> None:
    preset = parse_query(query)
    assert preset.settings == kept
    assert any(problem in p for p in preset.problems), preset.problems


def test_voila_and_jupyter_parameters_are_not_complained_about() -> None:
    assert parse_query("voila-theme=dark&token=abc&depth=4") == parse_query("depth=4")


def test_oversized_queries_are_ignored_whole() -> None:
    assert not parse_query("depth=3&" * 2000).settings
    assert "too long" in parse_query("depth=3&" * 2000).problems[0]
    many = "&".join(f"x{i}=1" for i in range(100))
    assert "more than" in parse_query(many).problems[0]


def test_notice_escapes_what_came_from_the_link() -> None:
    preset = parse_query("<script>alert(1)</script>=1&depth=<b>")
    html = preset_notice(preset)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>" not in html.replace("<b>Scenario", "")


def test_query_comes_from_voilas_environment_variable() -> None:
    assert query_from_environment({"QUERY_STRING": "depth=3"}) == "depth=3"
    assert query_from_environment({}) == ""


def test_every_preset_field_is_a_real_setting() -> None:
    session_fields = set(gw.TrainingSession().describe())
    assert set(PRESET_FIELDS) <= session_fields
    assert not set(DASHBOARD_FIELDS) & session_fields


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(sorted(PRESET_FIELDS)), st.text(max_size=12)),
            st.one_of(
                st.text(max_size=20),
                st.integers(-10**6, 10**6).map(str),
                st.floats(allow_nan=True, allow_infinity=True).map(repr),
                st.sampled_from(["sigmoid", "relu", "rnn", "lstm", "transformer", "batch", "layer", "true", "adding"]),
            ),
        ),
        max_size=8,
    )
)
def test_any_query_gives_settings_a_session_accepts(pairs: list[tuple[str, str]]) -> None:
    preset = parse_query(urlencode(pairs))
    assert set(preset.settings) <= set(PRESET_FIELDS)
    assert all(isinstance(p, str) for p in preset.problems)
    gw.TrainingSession(**preset.settings)  # never raises: the combination was validated the same way


def test_a_random_valid_preset_really_trains() -> None:
    preset = parse_query("kind=rnn&cell=gru&activation=tanh&seq_len=12&width=8&batch_size=16&lr=0.01&optimizer=adam")
    assert preset.ok
    stats = gw.TrainingSession(**preset.settings).step(3)
    assert stats.time_grad_norm is not None and len(stats.time_grad_norm) == 12


def test_generated_notebook_path_is_not_inside_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "find_dashboard", lambda: None)
    with cli.dashboard_path() as path:
        assert ROOT not in Path(path).parents
