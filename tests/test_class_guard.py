"""The class server's guards (gradwidgets.dashboard.server, .admission), the way a hostile room would try them.

Fast tests check the pure parts (the v1 header reader, the cap, the rate, the owners). The server tests run one
real ``gradwidgets dashboard`` server (cap 2, 2 new kernels per address per minute, no pool) and try: a legacy
websocket client asking the widgets for their state (it froze Voila, issue 21), a stranger's DELETE, GET, PATCH,
beacon and websocket on a kernel whose id they know, a climbing template path, a curl loop past the cap, and a
reload loop past the rate. Every request goes to 127.0.0.1 and every loop is bounded.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import struct
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from _servers import NOTEBOOKS, Server, kernel_processes, voila_server

from gradwidgets.dashboard.admission import Admission, class_full_page, default_max_kernels
from gradwidgets.dashboard.server import V1_PROTOCOL, read_v1_header

CONFIG = re.compile(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S)
STATIC = re.compile(r'src="(/voila/(?:static|templates)/[^"?]+)')


def v1_frame(msg_type: str, content: dict, buffers: tuple[bytes, ...] = (), metadata: dict | None = None) -> bytes:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "s", "username": "", "version": "5.4"}
    parts = [b"shell", *(json.dumps(x).encode() for x in (header, {}, metadata or {}, content)), *buffers]
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets) + b"".join(parts)


def legacy_binary_frame(msg_type: str, buffers: tuple[bytes, ...]) -> bytes:
    """jupyter_server's legacy binary framing (what a client without the v1 subprotocol is sent): a big-endian
    4-byte count, 4-byte offsets, the JSON message, the buffers."""
    message = json.dumps({"header": {"msg_type": msg_type}, "channel": "iopub", "content": {}}).encode()
    chunks = [message, *buffers]
    offsets, position = [], 4 * (len(chunks) + 1)
    for chunk in chunks:
        offsets.append(position)
        position += len(chunk)
    return struct.pack(f">{len(offsets) + 1}I", len(offsets), *offsets) + b"".join(chunks)


# --- the pure parts ---------------------------------------------------------------------------------------


def test_v1_header_is_read_and_legacy_or_garbage_frames_are_not_read_as_v1() -> None:
    assert read_v1_header(v1_frame("comm_msg", {"data": {}}, (b"\x00" * 64,)))["msg_type"] == "comm_msg"
    started = time.monotonic()
    for frame in (legacy_binary_frame("comm_msg", (b"\x01" * 4096,)), b"\xff" * 64, b"", b"\x05" + b"\x00" * 7):
        assert read_v1_header(frame) is None
    assert time.monotonic() - started < 0.1  # Voila's reader built a ~1e17-long list from such bytes


def test_cap_counts_live_kernels_and_pages_being_served() -> None:
    admission = Admission(max_kernels=2, per_minute=0)
    alive: set[str] = set()
    first = admission.admit("10.0.0.1", "a", alive)
    second = admission.admit("10.0.0.2", "b", alive)
    assert not isinstance(first, str) and not isinstance(second, str)
    assert admission.admit("10.0.0.3", "c", alive) == "full"  # two pages are still being given kernels
    admission.settle(first, "k1")
    admission.release(second)  # that page failed: its place is free again
    alive.add("k1")
    assert admission.in_use(alive) == 1
    third = admission.admit("10.0.0.3", "c", alive)
    assert not isinstance(third, str)
    admission.settle(third, "k3")
    alive.add("k3")
    assert admission.admit("10.0.0.4", "d", alive) == "full"
    alive.discard("k1")  # culled or closed: the place comes back
    assert not isinstance(admission.admit("10.0.0.4", "d", alive), str)


def test_rate_is_per_address_and_a_minute_long() -> None:
    now = [0.0]
    admission = Admission(max_kernels=100, per_minute=3, clock=lambda: now[0])
    for _ in range(3):
        assert not isinstance(admission.admit("10.0.0.1", "a", set()), str)
    assert admission.admit("10.0.0.1", "a", set()) == "rate"
    assert not isinstance(admission.admit("10.0.0.2", "b", set()), str)  # a neighbour does not notice
    now[0] = 59.0
    assert admission.admit("10.0.0.1", "a", set()) == "rate"
    now[0] = 60.5
    assert not isinstance(admission.admit("10.0.0.1", "a", set()), str)


def test_only_the_visitor_who_got_a_kernel_owns_it() -> None:
    admission = Admission(max_kernels=5, per_minute=0)
    ticket = admission.admit("10.0.0.1", "visitor-a", set())
    assert not isinstance(ticket, str)
    admission.settle(ticket, "k")
    assert admission.owns("visitor-a", "k")
    assert not admission.owns("visitor-b", "k") and not admission.owns(None, "k") and not admission.owns("", "k")
    assert not admission.owns("visitor-a", "other-kernel")


def test_default_cap_comes_from_free_memory_and_the_budget() -> None:
    assert default_max_kernels(available_mb=13_000, pool_size=1, budget_mb=600) == 18  # (13000-1024-600)/600
    assert default_max_kernels(available_mb=800, pool_size=1) == 1  # a laptop still serves its owner
    with pytest.raises(ValueError, match="max_kernels"):
        Admission(max_kernels=0)


def test_class_full_page_is_friendly_and_retries_itself() -> None:
    page = class_full_page("full")
    assert "class is full" in page and "try again in a minute" in page and "http-equiv='refresh'" in page
    assert "many dashboards very quickly" in class_full_page("rate")


# --- a real server ----------------------------------------------------------------------------------------


@dataclass
class Visit:
    kernel_id: str
    cookie: str
    html: str


def visit(server: Server, timeout: float = 240.0, query: str = "") -> tuple[int, Visit | str]:
    """GET the dashboard as a fresh browser (no cookie): its status and kernel, or the body if refused."""
    try:
        with urllib.request.urlopen(server.url + query, timeout=timeout) as response:
            cookie = "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or [])
            html = response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    return 200, Visit(json.loads(CONFIG.search(html).group(1))["kernelId"], cookie, html)


def request(server: Server, method: str, path: str, cookie: str = "", timeout: float = 10.0) -> int:
    """A raw request (the path is sent as is, ``..`` included); returns the status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request(method, path, body=b"{}" if method in ("POST", "PATCH") else None,
                           headers={"Cookie": cookie} if cookie else {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


async def open_channels(server: Server, kernel_id: str, cookie: str, protocols: list[str] | None) -> Any:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
    return await websocket_connect(HTTPRequest(url, headers={"Cookie": cookie} if cookie else {}),
                                   subprotocols=protocols)


def websocket_status(server: Server, kernel_id: str, cookie: str, protocols: list[str] | None) -> int:
    """101 if the kernel's websocket opens, else the HTTP status it was refused with."""
    from tornado.httpclient import HTTPClientError

    async def attempt() -> int:
        try:
            connection = await open_channels(server, kernel_id, cookie, protocols)
        except HTTPClientError as error:
            return error.code
        connection.close()
        return 101

    return asyncio.run(asyncio.wait_for(attempt(), 30))


async def widget_states(server: Server, student: Visit) -> str:
    """Every widget's state as the page's widget manager asks for it (``request_states``), as JSON text."""
    connection = await open_channels(server, student.kernel_id, student.cookie, [V1_PROTOCOL])
    comm = uuid.uuid4().hex
    opening = {"comm_id": comm, "target_name": "jupyter.widget.control", "data": {}}
    await connection.write_message(v1_frame("comm_open", opening, metadata={"version": "1.0.0"}), binary=True)
    await connection.write_message(v1_frame("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}}),
                                   binary=True)
    while True:
        message = await connection.read_message()
        assert message is not None, "the server closed the socket"
        if isinstance(message, bytes) and b"update_states" in message:
            connection.close()
            return message.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-class-guard.log", pool_size=0,
                       max_kernels=2, kernels_per_minute=2)
    try:
        srv.wait_listening()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def visits(server: Server) -> list[Visit]:
    """Two students, each with a kernel: the class is full from here on (cap 2)."""
    found = []
    for _ in range(2):
        status, result = visit(server)
        assert status == 200 and isinstance(result, Visit), (status, server.log()[-3000:])
        found.append(result)
    return found


@pytest.mark.slow
def test_a_legacy_websocket_client_is_refused_and_the_server_stays_responsive(
    server: Server, visits: list[Visit]
) -> None:
    mine = visits[0]
    voila = psutil.Process(server.process.pid)
    rss_before = voila.memory_info().rss
    static = STATIC.search(mine.html).group(1)

    async def legacy_client() -> int:
        """What froze Voila 0.5.13: no subprotocol, then ``request_states`` to the widgets (JSON framing)."""
        from tornado.httpclient import HTTPClientError

        try:
            connection = await open_channels(server, mine.kernel_id, mine.cookie, None)
        except HTTPClientError as error:
            return error.code
        comm = uuid.uuid4().hex
        for msg_type, content, metadata in (
            ("comm_open", {"comm_id": comm, "target_name": "jupyter.widget.control", "data": {}},
             {"version": "1.0.0"}),
            ("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}}, {}),
        ):
            header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "x", "username": "",
                      "version": "5.3"}
            await connection.write_message(json.dumps({"header": header, "parent_header": {}, "metadata": metadata,
                                                       "content": content, "channel": "shell", "buffers": []}))
        await asyncio.sleep(3.0)  # the widgets' states come back with binary buffers
        connection.close()
        return 101

    answer = asyncio.run(asyncio.wait_for(legacy_client(), 30))
    started = time.monotonic()  # Voila 0.5.13 alone: no answer (it froze), and its memory grew by gigabytes
    assert request(server, "GET", static, timeout=5.0) == 200
    assert time.monotonic() - started < 1.0
    assert voila.memory_info().rss - rss_before < 50 * 2**20
    assert answer == 400  # refused before the upgrade
    # and the page's own framing, with the page's cookie, still works
    assert websocket_status(server, mine.kernel_id, mine.cookie, [V1_PROTOCOL]) == 101


@pytest.mark.slow
def test_a_stranger_cannot_touch_a_kernel_whose_id_they_know(server: Server, visits: list[Visit]) -> None:
    mine, neighbour = visits
    kernel = f"/api/kernels/{mine.kernel_id}"
    for cookie in ("", neighbour.cookie):  # no cookie at all, or another student's
        assert request(server, "DELETE", kernel, cookie) == 403
        assert request(server, "GET", kernel, cookie) == 403
        assert request(server, "PATCH", kernel, cookie) in (403, 405)
        assert request(server, "POST", f"/voila/api/shutdown/{mine.kernel_id}", cookie) == 403
        assert websocket_status(server, mine.kernel_id, cookie, [V1_PROTOCOL]) == 403
    assert request(server, "GET", kernel, mine.cookie) == 200  # still alive, and the owner may look at it
    assert len(kernel_processes(server.process.pid)) == 2


@pytest.mark.slow
def test_a_students_own_malformed_frames_cannot_freeze_the_class(server: Server, visits: list[Visit]) -> None:
    """The page's owner may use its websocket, but a v1 frame claiming 10**17 parts (jupyter_server's reader built
    a list that long) or offsets past its end is dropped; the server answers and its memory stays flat."""
    student = visits[1]
    voila = psutil.Process(server.process.pid)
    rss_before = voila.memory_info().rss
    good = v1_frame("kernel_info_request", {})
    frames = [
        struct.pack("<Q", 10**17) + b"\x00" * 64,
        struct.pack("<4Q", 3, 32, 10**12, 10**15) + b"shell",
        good[:8] + struct.pack("<Q", 8) + good[16:],  # first offset inside the offset table
    ]

    async def send() -> str:
        connection = await open_channels(server, student.kernel_id, student.cookie, [V1_PROTOCOL])
        for frame in frames:
            await connection.write_message(frame, binary=True)
        await connection.write_message(good, binary=True)  # a real request on the same socket is still answered
        reply = ""
        while "kernel_info_reply" not in reply:
            message = await connection.read_message()
            assert message is not None, "the server closed the socket"
            reply = str(read_v1_header(message) if isinstance(message, bytes) else message)
        connection.close()
        return reply

    assert "kernel_info_reply" in asyncio.run(asyncio.wait_for(send(), 30))
    started = time.monotonic()
    assert request(server, "GET", STATIC.search(student.html).group(1), timeout=5.0) == 200
    assert time.monotonic() - started < 1.0
    assert voila.memory_info().rss - rss_before < 50 * 2**20
    assert server.log().count("Dropped a malformed v1 kernel websocket frame") == len(frames)


@pytest.mark.slow
def test_a_climbing_template_path_is_a_404() -> None:
    srv = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-class-guard-paths.log", pool_size=0)
    try:
        srv.wait_listening()
        for path in ("/voila/templates/../../etc/passwd", "/voila/templates/lab/static/../../../../etc/passwd",
                     "/voila/templates/x"):
            assert request(srv, "GET", path) == 404, path
    finally:
        srv.stop()


@pytest.mark.slow
def test_past_the_cap_a_curl_loop_gets_the_class_is_full_page_and_nobody_notices(
    server: Server, visits: list[Visit]
) -> None:
    for _ in range(10):
        started = time.monotonic()
        status, body = visit(server, timeout=10.0)
        assert status == 503 and "The class is full" in str(body)
        assert time.monotonic() - started < 2.0
    assert len(kernel_processes(server.process.pid)) == 2
    for student in visits:
        assert websocket_status(server, student.kernel_id, student.cookie, [V1_PROTOCOL]) == 101


@pytest.mark.slow
def test_the_owner_may_shut_down_and_reloading_fast_hits_the_rate(server: Server, visits: list[Visit]) -> None:
    mine = visits[0]
    assert request(server, "POST", f"/voila/api/shutdown/{mine.kernel_id}", mine.cookie) == 204  # the beacon
    deadline = time.monotonic() + 30
    while len(kernel_processes(server.process.pid)) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(kernel_processes(server.process.pid)) == 1
    # a place is free, but this address already had its 2 new kernels this minute
    status, body = visit(server, timeout=10.0)
    assert status == 503 and "many dashboards very quickly" in str(body)


@pytest.mark.slow
def test_a_preheated_kernels_request_hook_is_only_for_the_servers_own_kernels() -> None:
    """``/voila/query/<kernel id>`` hands a preheated kernel its visitor's request. A stranger there (no key, or a
    wrong one) is refused; the pool's kernel still gets the link's preset through its keyed address."""
    from tornado.httpclient import HTTPClientError
    from tornado.websocket import websocket_connect

    srv = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-class-guard-query.log", pool_size=1)

    async def status(path: str) -> int:
        try:
            connection = await websocket_connect(f"ws://127.0.0.1:{srv.port}{path}")
        except HTTPClientError as error:
            return error.code
        connection.close()
        return 101

    try:
        srv.wait_listening()
        for _ in range(600):  # the pool's kernel is started and waiting on its hook
            if len(kernel_processes(srv.process.pid)) == 1:
                break
            time.sleep(0.1)
        some_id = str(uuid.uuid4())
        for path in (f"/voila/query/{some_id}", f"/voila/query/{'x' * 32}/{some_id}"):
            assert asyncio.run(asyncio.wait_for(status(path), 30)) == 403, path
        code, student = visit(srv, query="?activation=tanh&depth=7")
        assert code == 200 and isinstance(student, Visit), srv.log()[-3000:]
        assert "Scenario from the link: <b>activation=tanh, depth=7" in asyncio.run(
            asyncio.wait_for(widget_states(srv, student), 60))
    finally:
        srv.stop()
