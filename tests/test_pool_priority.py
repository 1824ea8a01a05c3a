"""gradwidgets.dashboard.pool_priority: preheated kernels wait at low priority; a visitor's kernel runs normally.

The pure part runs :class:`PoolPriority` against recorded writes; the server test reads the real kernels'
``/proc/<pid>/autogroup`` on a ``gradwidgets dashboard`` server with a pool of 1 and one browserless student who
plays (the capacity benchmark's client).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from _servers import NOTEBOOKS, kernel_processes, voila_server

from gradwidgets.dashboard import pool_priority
from gradwidgets.dashboard.pool_priority import POOL_NICE, PoolPriority
from gradwidgets.runtime.priority import DEFAULT_SESSION_NICE, session_nice

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def writes(monkeypatch) -> list[tuple[int, int]]:
    done: list[tuple[int, int]] = []
    gone = {666}

    def write(nice: int, pid: int | None = None) -> bool:
        if pid in gone:
            return False
        done.append((pid, nice))
        return True

    monkeypatch.setattr(pool_priority, "write_session_nice", write)
    return done


def test_pool_kernels_start_idle_and_run_normally_once_handed_to_a_visitor(writes) -> None:
    async def scenario() -> None:
        pool = PoolPriority(POOL_NICE)
        await pool.pooled_kernel_started(101)
        async with pool.visitor_waits(ready=True):  # the next kernel was ready: nothing else changes
            pass
        await pool.claimed(101)
        await pool.claimed(555)  # never pooled (no pool): left alone
        assert writes == [(101, POOL_NICE), (101, 0)] and pool.pooled == frozenset()

    asyncio.run(scenario())


def test_while_a_visitor_waits_for_a_starting_kernel_the_pool_runs_normally(writes) -> None:
    async def scenario() -> None:
        pool = PoolPriority(POOL_NICE)
        await pool.pooled_kernel_started(201)
        await pool.pooled_kernel_started(666)  # died meanwhile: forgotten, no error
        async with pool.visitor_waits(ready=False):
            await pool.pooled_kernel_started(202)  # started while someone waits: at once at normal priority
            assert pool.current_nice == 0
            await pool.claimed(201)  # the visitor got the first one; it was already at 0
        assert writes == [(201, POOL_NICE), (201, 0), (202, 0), (202, POOL_NICE)]
        assert pool.pooled == frozenset({202}) and pool.current_nice == POOL_NICE

    asyncio.run(scenario())


def test_pool_niceness_zero_turns_it_off(writes, monkeypatch) -> None:
    async def scenario() -> None:
        pool = PoolPriority(0)
        await pool.pooled_kernel_started(301)
        async with pool.visitor_waits(ready=False):
            pass
        await pool.claimed(301)

    asyncio.run(scenario())
    assert writes == []
    assert pool_priority.pool_nice({"GRADWIDGETS_POOL_NICE": "0"}) == 0
    assert pool_priority.pool_nice({"GRADWIDGETS_POOL_NICE": "99"}) == POOL_NICE
    assert pool_priority.pool_nice({}) == POOL_NICE


def kernel_pid(server_pid: int, kernel_id: str = "", other_than: int | None = None,
               timeout: float = 240.0) -> int | None:
    """The pid of a kernel of the server (whose command line names ``kernel_id``), waiting for it to start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in kernel_processes(server_pid):
            if kernel_id in " ".join(process.cmdline()) and process.pid != other_than:
                return process.pid
        time.sleep(0.1)
    return None


def wait_for(read, expected, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="this kernel has no scheduler autogroups")
def test_on_a_real_server_the_pool_waits_idle_and_a_playing_student_yields_to_the_class() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_class_capacity import PRESET, Student

    server = voila_server(NOTEBOOKS / "dashboard.ipynb", log_name="voila-pool-priority.log", pool_size=1,
                          max_kernels=3)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the student's asyncio objects are made outside a running loop
    student = None
    try:
        server.wait_listening()
        pooled = kernel_pid(server.process.pid)
        assert pooled is not None, server.log()[-3000:]
        assert wait_for(lambda: session_nice(pooled), POOL_NICE) == POOL_NICE

        student = Student(server.url + PRESET)  # takes the pooled kernel and plays
        loop.run_until_complete(asyncio.wait_for(student.join(), 300))
        mine = kernel_pid(server.process.pid, student.kernel_id, timeout=10)
        assert mine == pooled
        assert wait_for(lambda: session_nice(mine), DEFAULT_SESSION_NICE) == DEFAULT_SESSION_NICE

        refill = kernel_pid(server.process.pid, other_than=mine)
        assert refill is not None, server.log()[-3000:]
        assert wait_for(lambda: session_nice(refill), POOL_NICE) == POOL_NICE
    finally:
        if student is not None:
            student.close()
            loop.run_until_complete(asyncio.sleep(0.1))
        asyncio.set_event_loop(None)
        loop.close()
        server.stop()
