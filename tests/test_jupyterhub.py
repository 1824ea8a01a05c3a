"""A real JupyterHub on this machine: the class set-up of ``deploy/jupyterhub/values.yaml`` without Kubernetes.

jupyterhub + configurable-http-proxy (npm) + a local process spawner + the dummy authenticator +
jupyterhub-idle-culler, all on 127.0.0.1. Five students get a single-user server each, land on the Voila
dashboard (the chart's ``defaultUrl``), with one torch thread and the chart's kernel culling settings; left
idle, their servers are culled by jupyterhub-idle-culler; after the hub stops, no process of the run is left.

What maps from the chart: ``singleuser.defaultUrl``, ``singleuser.extraEnv``, the ``jupyter_server_config``
file's ``MappingKernelManager`` settings (culling timeouts shortened so the test is bounded) and its ``ServerApp``
guards (:mod:`gradwidgets.dashboard.connection`), ``cull.*`` (jupyterhub-idle-culler as a hub service). What
does not: pods, images, CPU and memory limits (Kubernetes enforces them), the user scheduler, placeholders and
the pre-puller.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from _servers import ARTIFACTS, ROOT, free_port

yaml = pytest.importorskip("yaml")
pytest.importorskip("jupyterhub")
pytest.importorskip("jupyterhub_idle_culler")

pytestmark = [pytest.mark.slow]

if shutil.which("configurable-http-proxy") is None:
    pytest.skip("configurable-http-proxy not installed (npm install -g configurable-http-proxy)",
                allow_module_level=True)

VALUES = yaml.safe_load((ROOT / "deploy" / "jupyterhub" / "values.yaml").read_text())
STUDENTS = [f"student{i}" for i in range(1, 6)]
IDLE_SECONDS = 60
"""The idle culler's timeout here (the chart's 1200 s, shortened to bound the test)."""


def hub_config(tmp: Path, port: int, hub_port: int, api_port: int, token: str) -> str:
    user = VALUES["singleuser"]
    kernels = user["extraFiles"]["jupyter_server_config"]["data"]["MappingKernelManager"]
    guards = user["extraFiles"]["jupyter_server_config"]["data"]["ServerApp"]
    environment = {**user["extraEnv"], "PYTHONPATH": str(ROOT), "JUPYTERHUB_ACTIVITY_INTERVAL": "5"}
    return f"""
import sys
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.JupyterHub.db_url = "sqlite:///{tmp / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = "{tmp / 'cookie_secret'}"
c.JupyterHub.pid_file = "{tmp / 'hub.pid'}"
c.JupyterHub.authenticator_class = {VALUES['hub']['config']['JupyterHub']['authenticator_class']!r}
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = "{tmp}/home/{{username}}"
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.notebook_dir = {str(ROOT)!r}
c.Spawner.default_url = {user['defaultUrl']!r}
c.Spawner.environment = {json.dumps(environment)}
c.Spawner.http_timeout = 120
c.Spawner.start_timeout = {int(user['startTimeout'])}
c.Spawner.args = [
    "--ServerApp.allow_root=True",
    "--MappingKernelManager.cull_idle_timeout=30",
    "--MappingKernelManager.cull_interval=5",
    "--MappingKernelManager.cull_connected={kernels['cull_connected']}",
    "--ServerApp.kernel_websocket_connection_class={guards['kernel_websocket_connection_class']}",
    "--ServerApp.kernel_manager_class={guards['kernel_manager_class']}",
]
c.JupyterHub.last_activity_interval = 5
c.JupyterHub.services = [
    {{"name": "idle-culler",
      "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout={IDLE_SECONDS}", "--cull-every=5"]}},
    {{"name": "teacher", "api_token": {token!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "idle-culler", "services": ["idle-culler"],
      "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}},
    {{"name": "teacher", "services": ["teacher"],
      "scopes": ["admin:users", "admin:servers", "access:servers", "list:users", "read:users"]}},
]
"""


class Hub:
    def __init__(self, tmp: Path) -> None:
        self.port, hub_port, api_port = free_port(), free_port(), free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "jupyterhub_config.py"
        config.write_text(hub_config(tmp, self.port, hub_port, api_port, self.token))
        self.log_path = ARTIFACTS / "jupyterhub.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=tmp, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.seen: dict[int, psutil.Process] = {}

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def record_tree(self) -> None:
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen[child.pid] = child
        except psutil.Error:
            pass

    def api(self, method: str, path: str, timeout: float = 30.0) -> tuple[int, dict | list | None]:
        request = urllib.request.Request(f"{self.url}/hub/api{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            return error.code, None

    def get(self, path: str, timeout: float = 300.0) -> tuple[int, str, str]:
        """GET through the proxy as the teacher's service (token auth); status, final URL, body."""
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.url, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return error.code, path, error.read().decode("utf-8", "replace")

    def wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyterhub exited:\n{self.log()[-4000:]}")
            try:
                if self.api("GET", "/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"jupyterhub not up:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        self.record_tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def leftovers(self) -> list[psutil.Process]:
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=20)
        return alive

    def kill_leftovers(self) -> None:
        for process in self.leftovers():
            try:
                process.kill()
            except psutil.Error:
                pass


def wait_for(predicate, timeout: float, hub: Hub) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hub.record_tree()
        if predicate():
            return True
        time.sleep(2)
    return predicate()


def ready(hub: Hub, name: str) -> bool:
    status, model = hub.api("GET", f"/users/{name}")
    return status == 200 and isinstance(model, dict) and bool(model.get("servers", {}).get("", {}).get("ready"))


def running(hub: Hub) -> list[str]:
    _, users = hub.api("GET", "/users")
    return [u["name"] for u in users or [] if u.get("servers")]


def test_five_students_land_on_the_dashboard_are_culled_when_idle_and_nothing_is_left(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    try:
        hub.wait_up()
        for name in STUDENTS:
            assert hub.api("POST", f"/users/{name}")[0] in (201, 409)
            assert hub.api("POST", f"/users/{name}/server")[0] in (201, 202)

        def arrive(name: str) -> tuple[int, str, str]:
            """A student whose server is up opens it at once (as a browser after login would): /user/<name>/
            sends them to the chart's defaultUrl, the dashboard."""
            if not wait_for(lambda: ready(hub, name), 240, hub):
                return 0, "", f"{name}'s server never became ready"
            return hub.get(f"/user/{name}/")

        with ThreadPoolExecutor(len(STUDENTS)) as pool:
            pages = dict(zip(STUDENTS, pool.map(arrive, STUDENTS), strict=True))
        for name, (status, url, body) in pages.items():
            assert status == 200 and url.endswith(f"/user/{name}{VALUES['singleuser']['defaultUrl']}"), (
                name, status, url, body[:500], hub.log()[-3000:])
            assert "jupyter-config-data" in body and "Traceback" not in body, body[:2000]
        hub.record_tree()
        kernels = [p for p in hub.seen.values() if p.is_running() and "ipykernel" in " ".join(p.cmdline())]
        assert len(kernels) == len(STUDENTS)  # one dashboard kernel per student
        assert all(p.environ().get("OMP_NUM_THREADS") == "1" for p in kernels)
        # nobody is watching: jupyterhub-idle-culler stops every server
        assert wait_for(lambda: not running(hub), IDLE_SECONDS + 200, hub), (running(hub), hub.log()[-4000:])
        assert "Culling server" in hub.log() or "culling" in hub.log().lower()
    finally:
        hub.stop()
        left = hub.leftovers()
        hub.kill_leftovers()
    assert not left, [(p.pid, p.name()) for p in left]
