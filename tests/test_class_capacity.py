"""The browserless class benchmark's client, for real: two simulated students on a real ``gradwidgets dashboard``
server (Voila, preheated pool), each speaking Jupyter's v1 websocket protocol the way Voila's page does.

It checks what the benchmark relies on (the page's Heartbeat widget is found, every session's step counter
advances while it beats) and the per-tab traffic bound the class settings promise (frames at 10 a second,
slow views throttled: well under 25 kB/s on the wire, Jupyter envelopes included).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_class_capacity import measure  # noqa: E402

pytestmark = [pytest.mark.slow]

PER_TAB_KB_S = 25.0


def test_two_students_train_while_their_heartbeats_arrive() -> None:
    rows = asyncio.run(measure([1, 2], window=6.0, warmup=4.0))
    last = rows[-1]
    assert [row["heartbeats found"] for row in rows] == [1, 2]
    assert last["kernels"] >= 2  # one per student (plus the pool's waiting one, once refilled)
    assert last["min steps/s"] > 0, rows  # both step counters advance on the wire
    assert 0 < last["kB/s per tab"] < PER_TAB_KB_S, rows
