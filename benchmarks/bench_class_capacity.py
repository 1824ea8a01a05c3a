"""How many dashboard sessions one machine sustains at >= 10 steps/s each - without a browser per user.

A class is simulated by clients that speak Jupyter's kernel websocket protocol (``websockets``) to a real Voila
server started exactly as ``gradwidgets dashboard`` starts it: each client GETs the page
``?activation=sigmoid&depth=20&play=1`` (so its kernel runs the notebook and trains a depth-20 sigmoid net),
connects to ``/api/kernels/<id>/channels`` like Voila's front end, asks for the widget states, sends the
heartbeat a visible tab sends every 5 s, and reads the status line the app writes (``step N · R steps/s``).
Sessions are added a few at a time; after each addition every session's steps/s is measured over a window.

Printed: sessions vs median/min steps/s, kB/s received per session (what a tab downloads), RAM per kernel
(USS, psutil). Run: ``flock /tmp/gw-heavy.lock python benchmarks/bench_class_capacity.py [max_sessions]``.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psutil
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _servers import NOTEBOOKS, voila_server  # noqa: E402

QUERY = "activation=sigmoid&depth=20&play=1"
STEP = re.compile(r"<b>step (\d+)</b>")
KERNEL_ID = re.compile(r'"kernelId": "([0-9a-f-]+)"')
WINDOW_S = 15.0
TARGET = 10.0


def message(msg_type: str, content: dict, session: str, channel: str = "shell") -> str:
    return json.dumps(
        {
            "header": {
                "msg_id": uuid.uuid4().hex,
                "msg_type": msg_type,
                "session": session,
                "username": "bench",
                "date": datetime.now(timezone.utc).isoformat(),
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": channel,
            "buffers": [],
        }
    )


class Client:
    """One student's tab, minus the browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.kernel_id = ""
        self.session = uuid.uuid4().hex
        self.bytes = 0
        self.steps: list[tuple[float, int]] = []
        self.heartbeat_id: str | None = None
        self.beats = 0
        self.task: asyncio.Task | None = None

    def open_page(self) -> None:
        with urllib.request.urlopen(self.base + "?" + QUERY, timeout=600) as reply:
            html = reply.read().decode("utf-8", "replace")
        self.kernel_id = KERNEL_ID.search(html).group(1)

    async def run(self) -> None:
        ws_url = self.base.replace("http", "ws", 1) + f"api/kernels/{self.kernel_id}/channels?session_id={self.session}"
        async with websockets.connect(ws_url, max_size=None) as ws:
            control = uuid.uuid4().hex
            await ws.send(message("comm_open", {"comm_id": control, "target_name": "jupyter.widget.control",
                                                "data": {}}, self.session))
            await ws.send(message("comm_msg", {"comm_id": control, "data": {"method": "request_states"}},
                                  self.session))
            beat_task = asyncio.create_task(self._beat(ws))
            try:
                async for frame in ws:
                    self.bytes += len(frame)
                    if isinstance(frame, bytes):
                        continue  # messages with binary buffers: the bar heights
                    self._read(json.loads(frame))
            finally:
                beat_task.cancel()

    def _read(self, msg: dict) -> None:
        data = msg.get("content", {}).get("data", {}) or {}
        if data.get("method") == "update_states":
            for model_id, model in data.get("states", {}).items():
                if "beat" in model.get("state", {}):
                    self.heartbeat_id = model_id
        state = data.get("state") or {}
        value = state.get("value")
        if isinstance(value, str):
            found = STEP.search(value)
            if found:
                self.steps.append((time.monotonic(), int(found.group(1))))

    async def _beat(self, ws: object) -> None:
        while True:
            if self.heartbeat_id:
                self.beats += 1
                await ws.send(message("comm_msg", {"comm_id": self.heartbeat_id, "data": {
                    "method": "update", "state": {"beat": self.beats}, "buffer_paths": []}}, self.session))
            await asyncio.sleep(5.0)

    def rate(self, start: float, end: float) -> float:
        inside = [(t, s) for t, s in self.steps if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        (t0, s0), (t1, s1) = inside[0], inside[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def kernel_uss_mb(server: object) -> list[float]:
    out = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        if "ipykernel" in " ".join(process.cmdline()):
            try:
                out.append(process.memory_full_info().uss / 2**20)
            except psutil.Error:
                pass
    return out


async def main(max_sessions: int) -> None:
    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="bench-class-capacity.log")
    clients: list[Client] = []
    rows = []
    try:
        server.wait_listening()
        await asyncio.sleep(10)
        levels = [n for n in (1, 2, 4, 8, 12, 16, 20, 24, 28, 32) if n <= max_sessions]
        for level in levels:
            while len(clients) < level:
                client = Client(server.url)
                await asyncio.to_thread(client.open_page)
                client.task = asyncio.create_task(client.run())
                clients.append(client)
            await asyncio.sleep(8)  # the new sessions connect and start playing
            before = [c.bytes for c in clients]
            start = time.monotonic()
            await asyncio.sleep(WINDOW_S)
            end = time.monotonic()
            rates = [c.rate(start, end) for c in clients]
            kbps = [(c.bytes - b) / 1024 / (end - start) for c, b in zip(clients, before, strict=True)]
            uss = kernel_uss_mb(server)
            row = (level, statistics.median(rates), min(rates), statistics.median(kbps), statistics.median(uss),
                   psutil.virtual_memory().used / 2**30)
            rows.append(row)
            print(f"{row[0]:>8} {row[1]:>12.1f} {row[2]:>10.1f} {row[3]:>10.1f} {row[4]:>14.0f} {row[5]:>10.1f}",
                  flush=True)
            if row[1] < TARGET:
                break
    finally:
        for client in clients:
            if client.task:
                client.task.cancel()
        server.stop()
    ok = [r[0] for r in rows if r[1] >= TARGET]
    print(f"\nmost sessions with median >= {TARGET:g} steps/s: {max(ok) if ok else 0}")


if __name__ == "__main__":
    print("sessions  median st/s  min st/s  kB/s/tab  kernel USS MB  RAM used GB")
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 24))
