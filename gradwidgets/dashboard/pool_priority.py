"""The preheated pool runs at low priority, so refilling it never slows the page being opened.

When a visitor takes a preheated kernel, Voila starts its replacement at once: a new Python, torch imported, the
notebook run - seconds of CPU, which competed with the page the visitor was waiting for (a presenter's every second
preset link took 46-60 s, issue 21). Every kernel is a session of its own (:mod:`gradwidgets.runtime.priority`), so
the server gives a kernel that waits in the pool its session niceness :data:`POOL_NICE` and the normal 0 the moment
a visitor is handed it. A visitor who has to wait for a kernel still starting
(the pool drained faster than it refills) is waiting for *that* kernel: while anyone waits so, every pool kernel runs
at the normal priority, and the pool goes back to its low priority once nobody waits.

Loaded by the dashboard server process only (:class:`PooledKernel` is its kernels' manager class; the page handler
calls :meth:`PoolPriority.visitor_waits` around taking a kernel from the pool). ``GRADWIDGETS_POOL_NICE=0`` turns it
off (the benchmark's comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

from ..runtime.priority import WRITE_ATTEMPTS, WRITE_INTERVAL, niceness_from_env, write_session_nice

__all__ = ["POOL_NICE", "POOL_NICE_ENV", "PoolPriority", "PooledKernel", "pool_nice", "pool_priority"]

logger = logging.getLogger(__name__)

POOL_NICE_ENV = "GRADWIDGETS_POOL_NICE"
POOL_NICE = 10
"""Between a page (0) and a training kernel (19 on a class server, :mod:`gradwidgets.runtime.priority`): a refill
yields to the page being opened (a niceness-10 session weighs 110 against 1024) and beats everyone's training
(against 15), so the pool is full again before the next visitor, even while the class plays."""


def pool_nice(environ: Mapping[str, str] | None = None) -> int:
    """The pool's session niceness from ``GRADWIDGETS_POOL_NICE`` (0-19, 0: off; unset or bad: :data:`POOL_NICE`)."""
    return niceness_from_env(POOL_NICE_ENV, POOL_NICE, environ)


class PoolPriority:
    """Which kernels wait in the pool (by process id) and at what session niceness they run."""

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self.waiting_visitors = 0
        self._pooled: dict[int, int] = {}  # pid -> the niceness last written
        self._writes: asyncio.Lock | None = None

    @property
    def pooled(self) -> frozenset[int]:
        return frozenset(self._pooled)

    @property
    def current_nice(self) -> int:
        """What a pooled kernel runs at now: low priority, unless a visitor waits for one to finish starting."""
        return 0 if self.waiting_visitors else self.nice

    async def pooled_kernel_started(self, pid: int) -> None:
        if self.nice == 0:
            return
        self._pooled[pid] = -1
        await self._write(pid, self.current_nice)

    async def claimed(self, pid: int | None) -> None:
        """A visitor was handed the kernel ``pid``: it runs at the normal priority from now on."""
        if pid is not None and pid in self._pooled:
            await self._write(pid, 0)
            self._pooled.pop(pid, None)

    @contextlib.asynccontextmanager
    async def visitor_waits(self, ready: bool) -> AsyncIterator[None]:
        """Around taking a kernel from the pool; ``ready``: the next pooled kernel has finished starting (else the
        visitor waits for it, and the pool runs at the normal priority meanwhile)."""
        if ready or self.nice == 0:
            yield
            return
        self.waiting_visitors += 1
        if self.waiting_visitors == 1:
            await self._write_all(0)
        try:
            yield
        finally:
            self.waiting_visitors -= 1
            if self.waiting_visitors == 0:
                await self._write_all(self.nice)

    async def _write_all(self, nice: int) -> None:
        for pid in sorted(self._pooled):
            await self._write(pid, nice)

    async def _write(self, pid: int, nice: int) -> None:
        """One session niceness write, retried while Linux refuses for its rate, without blocking the server."""
        if self._writes is None:
            self._writes = asyncio.Lock()
        async with self._writes:
            for _ in range(WRITE_ATTEMPTS):
                if self._pooled.get(pid) == nice:
                    return
                outcome = write_session_nice(nice, pid)
                if outcome is False:  # gone, or not possible here
                    self._pooled.pop(pid, None)
                    return
                if outcome:
                    if pid in self._pooled:
                        self._pooled[pid] = nice
                    return
                await asyncio.sleep(WRITE_INTERVAL)
            logger.info("could not set kernel process %d's session niceness to %d (rate-limited)", pid, nice)


_pool_priority: PoolPriority | None = None


def pool_priority() -> PoolPriority:
    """The server's one :class:`PoolPriority` (a process holds one dashboard server)."""
    global _pool_priority
    if _pool_priority is None:
        _pool_priority = PoolPriority(pool_nice())
    return _pool_priority


def kernel_pid(kernel_manager: Any) -> int | None:
    """The process id of a started kernel's manager (``None`` if it has none, e.g. a remote provisioner)."""
    provisioner = getattr(kernel_manager, "provisioner", None)
    pid = getattr(provisioner, "pid", None) if provisioner is not None else None
    return pid if isinstance(pid, int) else None


class PooledKernel(ServerKernelManager):
    """A kernel's manager that starts Voila's preheated kernels at the pool's idle priority."""

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        env = kw.get("env") or {}
        pid = kernel_pid(self)
        if pid is not None and str(env.get("VOILA_PREHEAT", "")) == "True":
            await pool_priority().pooled_kernel_started(pid)
