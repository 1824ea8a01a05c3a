"""A class opens the dashboard at once: one Voila server, several browser tabs, each its own kernel.

What must hold: every tab trains, a toggle in one tab changes nothing in another, the page cannot make the
kernel run code (Voila only forwards widget messages), and closing a tab shuts its kernel down, training and all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import playwright.sync_api  # noqa: F401 - part of the test extra: missing it is an error, not a skip
import pytest
from _browser import Page
from _servers import NOTEBOOKS, serving, voila_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRESET = "activation=sigmoid&depth=10&play=1"
HIDDEN = slice(1, -1)  # input layer and head are outside the stack


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    # No preheated pool here: these tests count kernels, one per visitor (tests/test_nobody_watching.py and the
    # lifecycle tests run with the pool).
    with serving(voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-many-users.log", pool_size=0)) as srv:
        yield srv


def kernel_pids(server: Any) -> set[int]:
    """Kernel processes the Voila server started (its children running ipykernel)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server.process.pid and b"ipykernel" in cmdline:
            pids.add(int(stat.parent.name))
    return pids


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


STAIRCASE = 60
"""Pixels the sigmoid staircase rises at least, first to last hidden layer, in the 300 px bars chart (~95-110 px
measured at init; ReLU + He init brings it under half of that)."""


def staircase(heights: list[float]) -> float:
    """Pixel rise from the first to the last hidden layer: large for vanishing nets, small for healthy ones
    (NaN while a chart is between two runs and has no bars yet)."""
    hidden = heights[HIDDEN]
    return hidden[-1] - hidden[0] if len(hidden) >= 2 else float("nan")


def test_tabs_train_independently(server: Any, browser: Any) -> None:
    tabs = [Page(browser, server, PRESET) for _ in range(3)]
    try:
        assert wait_for(lambda: len(kernel_pids(server)) == 3), "one kernel per visitor"
        for tab in tabs:
            tab.wait_for_change(tab.wait_for_bars(count=10 + 2))
        before = [staircase(tab.heights()) for tab in tabs]
        assert min(before) > STAIRCASE, f"every sigmoid tab shows the vanishing staircase: {before}"

        tabs[0].control("dropdown", "activation").locator("select").select_option("relu")
        tabs[0].control("dropdown", "init").locator("select").select_option("kaiming")
        assert wait_for(lambda: abs(staircase(tabs[0].heights())) < 0.5 * before[0])

        for tab in tabs[1:]:
            assert tab.control("dropdown", "activation").locator("select").input_value() == "sigmoid"
            heights = tab.wait_for_change(tab.heights())  # still training
            assert staircase(heights) > STAIRCASE, "another visitor's toggle must not reach this tab"
            assert "Vanishing" in tab.text()
        for tab in tabs:
            tab.assert_no_errors()
    finally:
        for tab in tabs:
            tab.close()


def test_the_page_cannot_execute_code_in_its_kernel(server: Any, browser: Any, tmp_path: Path) -> None:
    """Voila forwards only comm and info messages; an execute_request from the page is dropped."""
    marker = tmp_path / "executed"
    tab = Page(browser, server, "depth=3")
    try:
        kernel_id = json.loads(tab.page.locator("#jupyter-config-data").text_content())["kernelId"]
        replies = tab.page.evaluate(
            """async ([base, kernelId, code]) => {
                // Jupyter's v1 binary framing, the only one the server accepts (what Voila's page speaks).
                const protocol = "v1.kernel.websocket.jupyter.org";
                const ws = new WebSocket(`ws://${location.host}${base}api/kernels/${kernelId}/channels`, [protocol]);
                ws.binaryType = "arraybuffer";
                const seen = [];
                ws.onmessage = (event) => {
                    const view = new DataView(event.data);
                    const offset = (i) => Number(view.getBigUint64(8 * (i + 1), true));
                    const header = new TextDecoder().decode(event.data.slice(offset(1), offset(2)));
                    seen.push(JSON.parse(header).msg_type);
                };
                await new Promise((resolve) => { ws.onopen = resolve; });
                const send = (type, content) => {
                    const header = {msg_id: crypto.randomUUID(), msg_type: type, session: "attacker", username: "",
                                    date: new Date().toISOString(), version: "5.3"};
                    const parts = ["shell", JSON.stringify(header), "{}", "{}", JSON.stringify(content)]
                        .map((text) => new TextEncoder().encode(text));
                    const offsets = [8 * (parts.length + 2)];
                    for (const part of parts) offsets.push(offsets[offsets.length - 1] + part.length);
                    const frame = new Uint8Array(offsets[offsets.length - 1]);
                    const view = new DataView(frame.buffer);
                    view.setBigUint64(0, BigInt(offsets.length), true);
                    offsets.forEach((value, i) => view.setBigUint64(8 * (i + 1), BigInt(value), true));
                    parts.forEach((part, i) => frame.set(part, offsets[i]));
                    ws.send(frame);
                };
                send("execute_request", {code, silent: false, store_history: false, user_expressions: {},
                                         allow_stdin: false, stop_on_error: true});
                send("kernel_info_request", {});
                await new Promise((resolve) => setTimeout(resolve, 4000));
                ws.close();
                return seen;
            }""",
            ["/", kernel_id, f"open({str(marker)!r}, 'w').write('pwned')"],
        )
        # The channel works (the control request is answered), yet the code never ran.
        assert "kernel_info_reply" in replies, replies
        assert "execute_reply" not in replies and "execute_input" not in replies, replies
        assert not marker.exists()
    finally:
        tab.close()


def test_closing_the_tab_shuts_its_kernel_down(server: Any, browser: Any) -> None:
    earlier = kernel_pids(server)
    tab = Page(browser, server, PRESET)
    try:
        tab.wait_for_change(tab.wait_for_bars(count=10 + 2))  # training is running in this tab's kernel
        mine = kernel_pids(server) - earlier
        assert len(mine) == 1
    finally:
        tab.close()
    assert wait_for(lambda: not mine & kernel_pids(server), timeout=30), "the kernel (and its training) ended"
