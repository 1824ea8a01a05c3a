"""The guards on the server-extension path: Binder and JupyterHub serve the dashboard from Voila's *server
extension* inside a ``jupyter server``, where jupyter_server's own handlers serve the kernels, not our guarded
Voila app (gradwidgets.dashboard.server).

There, jupyter_server's authentication (the token, or the hub's cookie) already keeps strangers out: every request
without it is refused, which the first test shows. What the user of that server can still do is what
``binder/jupyter_server_config.json`` (and the chart's ``jupyter_server_config``) guards with
gradwidgets.dashboard.connection: a malformed kernel websocket frame no longer freezes the server, and the kernels
are capped. A real ``jupyter server`` with that config file and the Voila extension runs on 127.0.0.1 with a token
and is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import psutil
import pytest
from _servers import ARTIFACTS, ROOT, Server, free_port, kernel_processes, server_environment

from gradwidgets.dashboard.connection import valid_legacy_frame, valid_v1_frame

CONFIG = re.compile(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S)
DASHBOARD = "voila/render/notebooks/dashboard.ipynb"
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def v1_frame(msg_type: str) -> bytes:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "s", "username": "", "version": "5.4"}
    parts = [b"shell", *(json.dumps(x).encode() for x in (header, {}, {}, {}))]
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets) + b"".join(parts)


def test_frames_are_checked_without_reading_a_claimed_count() -> None:
    good = v1_frame("kernel_info_request")
    assert valid_v1_frame(good)
    legacy = struct.pack(">2I", 1, 8) + b'{"header": {}}'
    assert valid_legacy_frame(legacy) and valid_legacy_frame('{"header": {}}')
    started = time.monotonic()
    for frame in (struct.pack("<Q", 10**17) + b"\x00" * 64, good[:8] + struct.pack("<Q", 8) + good[16:],
                  struct.pack("<4Q", 3, 32, 10**12, 10**15), b"", "text on the v1 protocol"):
        assert not valid_v1_frame(frame)
    for frame in (struct.pack(">i", 2**31 - 1) + b"\x00" * 64, struct.pack(">iI", 1, 10**9), b"\x00\x00"):
        assert not valid_legacy_frame(frame)
    assert time.monotonic() - started < 0.1


def test_the_default_cap_counts_default_sized_kernels_and_allows_two(monkeypatch) -> None:
    from gradwidgets.dashboard import connection

    for free_mb, expected in ((700.0, 2), (4000.0, 10), (100.0, 2)):
        monkeypatch.setattr(connection, "available_mb", lambda free_mb=free_mb: free_mb)
        assert connection.CappedKernelManager().cap == expected
    assert connection.CappedKernelManager(max_kernels=3).cap == 3


@pytest.fixture(scope="module")
def jupyter() -> Iterator[Server]:
    """``jupyter server`` + the Voila extension, configured by binder/jupyter_server_config.json, at most 1 kernel."""
    port, token = free_port(), secrets.token_hex(16)
    command = [
        sys.executable, "-m", "jupyter_server", f"--config={ROOT / 'binder' / 'jupyter_server_config.json'}",
        f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1", "--ServerApp.open_browser=False",
        "--ServerApp.port_retries=0", f"--ServerApp.root_dir={ROOT}", f"--IdentityProvider.token={token}",
        "--ServerApp.allow_root=True", "--CappedKernelManager.max_kernels=1",
    ]
    srv = Server(command, port, ARTIFACTS / "jupyter-server-extension-guard.log",
                 env=server_environment({"PYTHONPATH": str(ROOT)}))
    srv.token = token  # type: ignore[attr-defined]
    try:
        srv.wait_listening()
        yield srv
    finally:
        srv.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect (to the login page) is the answer


OPENER = urllib.request.build_opener(_NoRedirect)


def get(server: Server, path: str, token: bool = True, timeout: float = 240.0) -> tuple[int, str]:
    """Status and body of a GET, redirects not followed."""
    separator = "&" if "?" in path else "?"
    url = server.url + path + (f"{separator}token={server.token}" if token else "")  # type: ignore[attr-defined]
    try:
        with OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@pytest.mark.slow
def test_a_stranger_without_the_token_gets_nothing(jupyter: Server) -> None:
    assert get(jupyter, DASHBOARD, token=False, timeout=30)[0] == 302  # to the login page
    for path in ("api/kernels", "api/sessions", "api/contents"):
        assert get(jupyter, path, token=False, timeout=30)[0] == 403, path
    assert kernel_processes(jupyter.process.pid) == []


@pytest.mark.slow
def test_the_users_malformed_frames_are_dropped_and_the_server_stays_responsive(jupyter: Server) -> None:
    from tornado.websocket import websocket_connect

    status, page = get(jupyter, DASHBOARD)
    assert status == 200, jupyter.log()[-3000:]
    kernel_id = json.loads(CONFIG.search(page).group(1))["kernelId"]
    process = psutil.Process(jupyter.process.pid)
    rss_before = process.memory_info().rss
    channels = (f"ws://127.0.0.1:{jupyter.port}/api/kernels/{kernel_id}/channels"
                f"?session_id={uuid.uuid4().hex}&token={jupyter.token}")  # type: ignore[attr-defined]

    async def send(protocols: list[str] | None, frames: list[bytes]) -> str:
        connection = await websocket_connect(channels, subprotocols=protocols)
        for frame in frames:
            await connection.write_message(frame, binary=True)
        if protocols:  # a real request after them is still answered
            await connection.write_message(v1_frame("kernel_info_request"), binary=True)
            while True:
                message = await connection.read_message()
                assert message is not None, "the server closed the socket"
                if b"kernel_info_reply" in message:
                    break
        connection.close()
        return "ok"

    v1_bad = [struct.pack("<Q", 10**17) + b"\x00" * 64, struct.pack("<4Q", 3, 32, 10**12, 10**15)]
    legacy_bad = [struct.pack(">i", 2**31 - 1) + b"\x00" * 64]
    assert asyncio.run(asyncio.wait_for(send([V1_PROTOCOL], v1_bad), 60)) == "ok"
    assert asyncio.run(asyncio.wait_for(send(None, legacy_bad), 60)) == "ok"
    started = time.monotonic()  # jupyter_server alone: no answer, and gigabytes more memory
    assert get(jupyter, "api/status", timeout=5)[0] == 200
    assert time.monotonic() - started < 1.0
    assert process.memory_info().rss - rss_before < 50 * 2**20
    deadline = time.monotonic() + 10  # the legacy socket was closed without a reply: its log line may lag
    while "malformed legacy" not in jupyter.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = jupyter.log()
    assert log.count("Dropped a malformed v1 kernel websocket frame") == len(v1_bad)
    assert log.count("Dropped a malformed legacy kernel websocket frame") == len(legacy_bad)


@pytest.mark.slow
def test_past_the_kernel_cap_a_new_page_is_refused(jupyter: Server) -> None:
    if not kernel_processes(jupyter.process.pid):
        assert get(jupyter, DASHBOARD)[0] == 200
    started = time.monotonic()
    status, body = get(jupyter, DASHBOARD, timeout=60)
    assert status == 503 and "The class is full" in body, body[-2000:]
    assert time.monotonic() - started < 5.0
    assert len(kernel_processes(jupyter.process.pid)) == 1
