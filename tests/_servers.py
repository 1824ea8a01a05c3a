"""Helpers for tests that run real servers and a real browser: free ports, Voila start/stop, Chromium.

Servers bind to 127.0.0.1 only, on a port the OS just handed out, and are always killed (process group) in
teardown, even when a test fails halfway.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    """Debian's chromium, or one named by ``GRADWIDGETS_CHROMIUM`` (playwright never downloads a browser here)."""
    override = os.environ.get("GRADWIDGETS_CHROMIUM")
    if override:
        return override if Path(override).exists() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("chromium")
    return found


def kernel_processes(pid: int) -> list:
    """The live ipykernel processes under process ``pid`` (psutil). A kernel that just died and is not reaped yet
    (a zombie, whose command line cannot be read) or is gone meanwhile is not one of them."""
    import psutil

    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    kernels = []
    for process in tree:
        try:
            if "ipykernel" in " ".join(process.cmdline()):
                kernels.append(process)
        except psutil.Error:
            continue
    return kernels


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for server processes: one torch thread per kernel, no browser opening."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BROWSER": "true", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


class Server:
    """A child process serving HTTP on ``127.0.0.1:port``; its log goes to ``log_path``."""

    def __init__(self, command: Sequence[str], port: int, log_path: Path, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.listening_seconds: float | None = None  # set by serving()
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(command), cwd=cwd, env=env or server_environment(), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 60.0) -> float:
        """Seconds until the port accepts connections; raises with the server's log if it never does."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return time.monotonic() - started
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"server not listening after {timeout}s:\n{self.log()[-4000:]}")

    def get(self, path: str = "", timeout: float = 120.0) -> tuple[int, str]:
        """GET a page (Voila answers once the notebook has run); returns status and body."""
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Stop the whole process group (Voila and its kernels); SIGKILL if it does not go in time."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def serving(server: Server, timeout: float = 60.0) -> Iterator[Server]:
    """``server`` once it listens (``listening_seconds`` says how long that took); stopped on the way out, its whole
    process group, also when the test fails or the server never came up."""
    try:
        server.listening_seconds = server.wait_listening(timeout)
        yield server
    finally:
        server.stop()


def voila_server(notebook: Path, port: int | None = None, log_name: str = "voila.log",
                 env: dict[str, str] | None = None, theme: str = "light", pool_size: int | None = None,
                 max_kernels: int = 0, kernels_per_minute: int = 0) -> Server:
    """Voila serving one notebook with exactly the options ``gradwidgets dashboard [--theme THEME]`` uses
    (``pool_size``: the preheated pool, the CLI's default unless a test counts kernels one per visitor;
    ``max_kernels``: the class cap, 0 sized from free memory as the CLI does; ``kernels_per_minute``: the
    per-address rate, off by default here since every test client comes from 127.0.0.1)."""
    from gradwidgets.dashboard.cli import DEFAULT_POOL_SIZE, dashboard_environment, voila_command

    port = port or free_port()
    pool = DEFAULT_POOL_SIZE if pool_size is None else pool_size
    command = [*voila_command(notebook, port, "127.0.0.1", open_browser=False, theme=theme, pool_size=pool,
                              max_kernels=max_kernels, kernels_per_minute=kernels_per_minute),
               "--Voila.port_retries=0"]
    return Server(command, port, ARTIFACTS / log_name, env=dashboard_environment(server_environment(env)))


def jupyter_app(module: str, root: Path, log_name: str, env: dict[str, str] | None = None) -> Server:
    """``python -m jupyter_server`` or ``jupyterlab`` over ``root`` on a free port, with a random ``token``
    (on the returned server); allow_root because CI runs as root."""
    import secrets

    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", module, f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.open_browser=False", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}", "--ServerApp.allow_root=True",
    ]
    server = Server(command, port, ARTIFACTS / log_name, env=env)
    server.token = token  # type: ignore[attr-defined]
    return server
