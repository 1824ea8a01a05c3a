"""``gradwidgets dashboard`` stops cleanly on SIGTERM, SIGHUP and SIGINT, even started as a background job
(SIGINT ignored): Voila and every kernel end (checked with psutil), the temp folders go, no traceback.

Each case runs the real command with a preheated kernel pool, takes a kernel with a page request and signals
the CLI while the pool refills (a kernel mid-start is the hardest moment to stop at).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from _servers import ROOT, free_port, kernel_processes, server_environment

from gradwidgets.dashboard import cli

pytestmark = [pytest.mark.slow]


def _wait_for(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout:.0f}s:\n{log.read_text(errors='replace')[-4000:]}")


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if text in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_signal_stops_voila_every_kernel_and_removes_temp_folders(sig: int, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "cli.log"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = server_environment({"TMPDIR": str(temp)})
    with open(log, "w") as out:
        cli_process = subprocess.Popen(
            [sys.executable, "-m", "gradwidgets", "dashboard", "--port", str(port), "--no-browser"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # what `gradwidgets dashboard &` in a script gets: SIGINT ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    tree: list[psutil.Process] = []
    try:
        _wait_for(lambda: "is filled with 1 kernel" in log.read_text(), 120, "kernel pool filled", log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?depth=5", timeout=60) as response:
            assert response.status == 200 and b"Traceback" not in response.read()
        roots = [p for p in temp.iterdir() if p.name.startswith("gradwidgets-")]
        assert len(roots) == 1, list(temp.iterdir())  # everything Voila writes to temp lands in here
        root = roots[0]
        assert any(p.name.startswith("voila_") for p in root.iterdir())  # its connection files
        tree = psutil.Process(cli_process.pid).children(recursive=True)
        kernels = kernel_processes(cli_process.pid)
        assert len(kernels) >= 2, [p.cmdline() for p in tree]  # the visitor's kernel and the pool's

        os.kill(cli_process.pid, sig)
        assert cli_process.wait(timeout=45) == 0
        assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not _processes_mentioning(str(root))  # nothing started later either (kernels name their files)
        assert not root.exists() and not list(temp.iterdir())
        output = log.read_text(errors="replace")
        assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-4000:]
        assert re.search(r"Kernel shutdown", output)  # Voila shut its kernels down itself
    finally:
        if cli_process.poll() is None:
            os.killpg(cli_process.pid, signal.SIGKILL)
            cli_process.wait(timeout=10)
        for process in tree:
            if process.is_running():
                process.kill()


def test_voila_command_has_the_class_settings() -> None:
    command = cli.voila_command(Path("x.ipynb"), 1234, "0.0.0.0", False, pool_size=3, temp_root=Path("/t"))
    assert "--preheat_kernel=True" in command and "--pool_size=3" in command
    assert "--template=gradwidgets" in command
    assert any(c.endswith("multi_kernel_manager_class=gradwidgets.dashboard.culling.WatchedKernelManager")
               for c in command)
    assert "--Voila.connection_dir_root=/t" in command
    assert "--GradwidgetsVoila.max_kernels=0" in command  # 0: the server sizes the cap from free memory
    assert not any("tornado_settings" in c for c in command)  # set in code: no traitlets DeprecationWarning
    # Notebook 7's JupyterLab extension fails in a Voila page (the browser tests see no console error with it)
    assert "--VoilaConfiguration.extension_denylist=@jupyter-notebook/lab-extension" in command
    assert not any("preheat" in c for c in cli.voila_command(Path("x.ipynb"), 1, "127.0.0.1", False, pool_size=0))
    env = cli.dashboard_environment({}, ip="0.0.0.0", temp_root=Path("/t"))
    assert env["VOILA_APP_IP"] == "127.0.0.1" and env["TMPDIR"] == "/t"
    assert env["JUPYTER_PATH"].split(os.pathsep)[0] == str(cli.SHARE)
    assert (cli.SHARE / "voila" / "templates" / "gradwidgets" / "index.html.j2").is_file()
    assert cli.dashboard_environment({}, ip="10.1.2.3")["VOILA_APP_IP"] == "10.1.2.3"


@pytest.mark.parametrize("size", ["-1", "33", "two"])
def test_bad_pool_size_is_refused(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["dashboard", "--pool-size", size, "--dry-run"])
    assert "pool size" in capsys.readouterr().err


def test_only_the_shutdown_zmq_traceback_is_dropped_and_only_while_stopping() -> None:
    from gradwidgets.dashboard.supervisor import ShutdownNoiseFilter

    noise_block = [
        "[IPKernelApp] ERROR | Exception in message handler:\n",
        "Traceback (most recent call last):\n",
        '  File "kernelbase.py", line 508, in dispatch_shell\n',
        "zmq.error.ZMQError: Socket operation on non-socket\n",
    ]
    real_block = [*noise_block[:3], "ValueError: a real bug\n"]
    out: list[str] = []
    noise = ShutdownNoiseFilter(out.append)
    for line in ["[Voila] serving\n", *noise_block]:
        noise.feed(line)
    assert out == ["[Voila] serving\n", *noise_block]  # not stopping: everything passes
    out.clear()
    noise.stopping = True
    for line in [*noise_block, *real_block, "[Voila] Kernel shutdown: x\n"]:
        noise.feed(line)
    noise.close()
    assert out == [*real_block, "[Voila] Kernel shutdown: x\n"]


def test_preheated_kernel_reads_the_query_through_the_request_hook() -> None:
    from gradwidgets.dashboard.presets import query_from_request

    environ = {"VOILA_PREHEAT": "True"}
    calls: list[int] = []

    def hook() -> None:  # what voila.utils.wait_for_request does once a visitor takes this kernel
        calls.append(1)
        environ["QUERY_STRING"] = "activation=sigmoid&depth=20"

    assert query_from_request(environ, wait=hook) == "activation=sigmoid&depth=20" and calls == [1]
    plain = {"QUERY_STRING": "depth=3"}
    assert query_from_request(plain, wait=lambda: calls.append(2)) == "depth=3" and calls == [1]  # no hook
