"""How many students can one machine serve? No browser per student: each simulated student is a client that
speaks Jupyter's kernel websocket protocol to a real ``gradwidgets dashboard`` server, the way Voila's own page
does after loading.

Each client: GET the dashboard with ``?activation=sigmoid&depth=20&play=1`` (Voila runs the notebook in a kernel of
its own, from the preheated pool when one is waiting), open that kernel's websocket with the v1 binary framing
the page uses, send ``kernel_info_request``, fetch every widget's state with ipywidgets' ``request_states`` on a
``jupyter.widget.control`` comm (as the page's widget manager does), then send a heartbeat every 5 s to the
page's ``Heartbeat`` widget (so the nobody-watching pause does not fire) and read the Playground's status line
(``step N``) from the widget updates the kernel streams.

For each number of sessions N (added one by one): every session's steps/s over a window, the kernels' memory
(USS; "kernels" counts the pool's waiting one too), and what each session receives over its websocket
(messages/s and kB/s, Jupyter envelopes included: the real per-tab traffic). The table says up to which N
every session keeps >= 10 steps/s. New kernels start (the pool refills) while the others train, so the
later levels are measured while that start-up also takes CPU, as when a class trickles in.

    python benchmarks/bench_class_capacity.py [--levels 1,5,10,15,20,25] [--window 15] [--warmup 8]

Ctrl-C, SIGTERM and SIGHUP stop the server and every kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import statistics
import struct
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _servers import NOTEBOOKS, voila_server  # noqa: E402

PRESET = "?activation=sigmoid&depth=20&play=1"
STATUS_STEP = re.compile(r"gw-status[^>]*><b>step (\d+)</b>")
CONFIG = re.compile(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S)
TARGET = 10.0
BEAT_SECONDS = 5.0
CONTROL_VERSION = "1.0.0"
"""ipywidgets' control-comm protocol (``request_states``), sent as the comm_open's metadata."""


PROTOCOL = "v1.kernel.websocket.jupyter.org"
"""The binary websocket framing JupyterLab's and Voila's kernel connection use (so kB/s is what a tab gets)."""


def encode(channel: str, msg_type: str, content: dict, session: str, metadata: dict | None = None) -> bytes:
    """One message in the v1 framing (jupyter_server's ``serialize_msg_to_ws_v1``): the number of offsets, the
    offsets (each part's start, then the end), then channel, header, parent header, metadata, content."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "bench", "session": session,
              "date": "", "version": "5.4"}
    parts = [channel.encode(), *(json.dumps(x).encode() for x in (header, {}, metadata or {}, content))]
    offsets = [8 * (len(parts) + 2)]  # the count, one offset per part, the end
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets) + b"".join(parts)


def decode(frame: bytes) -> tuple[str, dict, dict]:
    """Channel, header and content of a v1 frame (binary buffers after them are not needed here)."""
    count = struct.unpack_from("<Q", frame)[0]
    offsets = struct.unpack_from(f"<{count}Q", frame, 8)
    part = [frame[offsets[i]:offsets[i + 1]] for i in range(min(count - 1, 5))]
    return part[0].decode(), json.loads(part[1]), json.loads(part[4])


@dataclass
class Student:
    """One simulated page: what Voila's page does after loading, over its kernel's websocket.

    kernel_info, then ipywidgets' bulk ``request_states`` on a ``jupyter.widget.control`` comm (the page's
    widget manager does exactly this), then a heartbeat every 5 s to the page's ``Heartbeat`` widget.
    """

    url: str
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    kernel_id: str = ""
    connection: WebSocketClientConnection | None = None
    steps: list[tuple[float, int]] = field(default_factory=list)
    received_bytes: int = 0
    received_messages: int = 0
    heartbeat: str | None = None
    beats: int = 0
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Future] = field(default_factory=list)

    async def join(self) -> None:
        html, cookies = await asyncio.to_thread(self._get_page)
        found = CONFIG.search(html)
        if not found:
            raise RuntimeError("no jupyter-config-data in the page (did the notebook fail?)")
        self.kernel_id = json.loads(found.group(1))["kernelId"]
        base = self.url.split("?")[0].rstrip("/").replace("http://", "ws://")
        self.connection = await websocket_connect(
            HTTPRequest(f"{base}/api/kernels/{self.kernel_id}/channels?session_id={self.session}",
                        headers={"Cookie": cookies}),
            subprotocols=[PROTOCOL], max_message_size=2**28,
        )
        self.tasks.append(asyncio.ensure_future(self._read()))
        await self._send("shell", "kernel_info_request", {})
        control = uuid.uuid4().hex
        await self._send("shell", "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control",
                                               "data": {}}, metadata={"version": CONTROL_VERSION})
        await self._send("shell", "comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
        await asyncio.wait_for(self.listed.wait(), 120)
        await self._send("shell", "comm_close", {"comm_id": control, "data": {}})
        if self.heartbeat is None:
            raise RuntimeError("the page has no Heartbeat widget")
        self.tasks.append(asyncio.ensure_future(self._beat()))

    def _get_page(self) -> tuple[str, str]:
        """The page and its cookies (the server lets only the page's own cookie open the kernel's websocket)."""
        with urllib.request.urlopen(self.url, timeout=300) as response:
            cookies = "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or [])
            return response.read().decode(), cookies

    async def _send(self, channel: str, msg_type: str, content: dict, metadata: dict | None = None) -> None:
        assert self.connection is not None
        frame = encode(channel, msg_type, content, self.session, metadata)
        await self.connection.write_message(frame, binary=True)

    async def _read(self) -> None:
        assert self.connection is not None
        while True:
            raw = await self.connection.read_message()
            if raw is None:
                return
            self.received_bytes += len(raw)
            self.received_messages += 1
            _, header, content = decode(raw if isinstance(raw, bytes) else raw.encode())
            if header.get("msg_type") != "comm_msg":
                continue
            data = content.get("data", {})
            if data.get("method") == "update_states":
                for comm_id, model in data.get("states", {}).items():
                    if {"beat", "interval"} <= set(model.get("state", {})):
                        self.heartbeat = comm_id
                self.listed.set()
            for value in data.get("state", {}).values():
                if isinstance(value, str) and "gw-status" in value:
                    match = STATUS_STEP.search(value)
                    if match:
                        self.steps.append((time.monotonic(), int(match.group(1))))

    async def _beat(self) -> None:
        while self.connection is not None:
            self.beats += 1
            state = {"method": "update", "state": {"beat": self.beats}, "buffer_paths": []}
            await self._send("shell", "comm_msg", {"comm_id": self.heartbeat, "data": state})
            await asyncio.sleep(BEAT_SECONDS)

    def rate(self, start: float, end: float) -> float:
        inside = [(t, s) for t, s in self.steps if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def kernel_uss_mib(server_pid: int) -> list[float]:
    out = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if any("ipykernel" in part for part in child.cmdline()):
                out.append(child.memory_full_info().uss / 2**20)
        except psutil.Error:
            continue
    return out


async def measure(levels: list[int], window: float, warmup: float) -> list[dict]:
    # The cap is what this benchmark measures, so the server's own is lifted above the largest level.
    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-bench-capacity.log",
                          max_kernels=max(levels) + 4)
    students: list[Student] = []
    rows = []
    try:
        server.wait_listening()
        url = f"http://127.0.0.1:{server.port}/{PRESET}"
        for level in levels:
            while len(students) < level:
                student = Student(url)
                await student.join()
                students.append(student)
            await asyncio.sleep(warmup)
            bytes_before = [s.received_bytes for s in students]
            messages_before = [s.received_messages for s in students]
            start = time.monotonic()
            await asyncio.sleep(window)
            end = time.monotonic()
            rates = [s.rate(start, end) for s in students]
            kib = [(s.received_bytes - b) / 1024 / (end - start) for s, b in zip(students, bytes_before, strict=True)]
            msgs = [(s.received_messages - m) / (end - start) for s, m in zip(students, messages_before, strict=True)]
            memory = kernel_uss_mib(server.process.pid)
            rows.append(
                {
                    "sessions": level,
                    "min steps/s": min(rates),
                    "median steps/s": statistics.median(rates),
                    "kB/s per tab": statistics.median(kib),
                    "msgs/s per tab": statistics.median(msgs),
                    "kernels": len(memory),
                    "USS MiB/kernel": statistics.median(memory) if memory else float("nan"),
                    "heartbeats found": sum(s.heartbeat is not None for s in students),
                }
            )
            print(" | ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()))
    finally:
        for student in students:
            student.close()
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,5,10,15,20,25", help="session counts, ascending, comma-separated")
    parser.add_argument("--window", type=float, default=10.0, help="seconds over which steps/s is measured")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the last session joined")
    args = parser.parse_args()
    levels = sorted({int(n) for n in args.levels.split(",")})

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for stop in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: the server and its kernels are stopped on the way out
        signal.signal(stop, interrupted)
    rows = asyncio.run(measure(levels, args.window, args.warmup))
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    sustained = [row["sessions"] for row in rows if row["min steps/s"] >= TARGET]
    print(f"\nsessions that all keep >= {TARGET:g} steps/s: up to {max(sustained) if sustained else 0}")


if __name__ == "__main__":
    main()
