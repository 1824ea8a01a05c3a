"""A recording comm: every message the widgets would send to the front end, without a kernel or a browser.

This is how the tests and ``benchmarks/bench_widgets.py`` count frames, messages and bytes. It replaces
``comm.create_comm`` (what ipywidgets calls to open a widget's channel), like ipywidgets' own test helpers
(``ipywidgets.widgets.tests.utils.DummyComm``), and adds thread-safe recording with timestamps.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import comm as comm_package
from ipywidgets import Widget

__all__ = ["RecordedMessage", "Recorder", "RecordingComm", "recording_comm", "wait_until"]

_ids = itertools.count()


@dataclass(frozen=True)
class RecordedMessage:
    """One ``comm_msg`` (or the ``comm_open``) a widget sent: when, to which model, what, how big."""

    time: float
    comm_id: str
    data: dict
    buffer_sizes: tuple[int, ...]
    thread: str
    payload_bytes: int
    """JSON body plus binary buffers: what the front end receives, before the Jupyter envelope. Serialized
    when sent, as a kernel would, so that benchmarks pay a realistic cost per message."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple((self.data or {}).get("state", {}))


class RecordingComm:
    """Stands in for an ipykernel comm; appends every ``send`` to its recorder."""

    kernel = "recording"

    def __init__(self, recorder: Recorder, data: dict | None = None, buffers: Any = None, **kwargs: Any) -> None:
        self.comm_id = str(kwargs.get("comm_id") or f"recorded-{next(_ids)}")
        self.target_name = kwargs.get("target_name", "")
        self._recorder = recorder
        self._handler = None
        recorder._add(self, data or {}, buffers)

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, callback: Any) -> None:
        self._handler = callback

    def on_close(self, callback: Any) -> None:
        pass

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self._recorder._add(self, data or {}, buffers)

    def close(self, *args: Any, **kwargs: Any) -> None:
        self._recorder.closed.add(self.comm_id)


class Recorder:
    """All messages sent while recording, per model; safe to read while threads send."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[RecordedMessage] = []
        self.closed: set[str] = set()

    def _add(self, comm: RecordingComm, data: dict, buffers: Any) -> None:
        sizes = tuple(memoryview(b).nbytes for b in buffers or ())
        body = json.dumps(data, default=str, separators=(",", ":")).encode()
        message = RecordedMessage(
            time.monotonic(), comm.comm_id, data, sizes, threading.current_thread().name, len(body) + sum(sizes)
        )
        with self._lock:
            self.messages.append(message)

    def snapshot(self) -> list[RecordedMessage]:
        with self._lock:
            return list(self.messages)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def updates(self, widget: Widget | None = None, since: float = -1.0) -> list[RecordedMessage]:
        """State updates (``method == "update"``), to ``widget`` only when given, sent after ``since``."""
        model = widget.model_id if widget is not None else None
        return [
            m
            for m in self.snapshot()
            if m.time > since and (m.data or {}).get("method") == "update" and (model is None or m.comm_id == model)
        ]

    def payload_bytes(self, since: float = -1.0) -> int:
        return sum(m.payload_bytes for m in self.snapshot() if m.time > since)


@contextmanager
def recording_comm() -> Iterator[Recorder]:
    """Record instead of send: widgets made inside the block talk to a :class:`Recorder`."""
    recorder = Recorder()
    original = comm_package.create_comm
    recording = lambda *args, **kwargs: RecordingComm(recorder, *args, **kwargs)
    comm_package.create_comm = recording  # type: ignore[assignment]  # a BaseComm by duck typing: it only records
    try:
        yield recorder
    finally:
        comm_package.create_comm = original


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; returns whether it held. For tests of threads:
    wait for the behaviour, never assert on how long it took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
