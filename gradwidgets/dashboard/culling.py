"""Kernels of vanished pages are shut down, whatever traffic they still make.

jupyter_server's idle culler looks at a kernel's *last activity*, and every message a kernel sends counts: a
playing widget's frames keep a kernel "active" forever, so a page that died without unloading (browser killed,
laptop lid closed, network gone) and a ``curl`` of the page held their kernels until the server stopped.
:class:`WatchedKernelManager` adds one rule to the stock culler (which keeps running, unchanged): a kernel
that has had **no open websocket** for ``disconnected_timeout`` seconds, and is not executing a cell, is shut
down. Voila's preheated kernels (waiting in the pool) are exempt: Voila's own manager checks them first.

Loaded by the Voila server process (``--VoilaConfiguration.multi_kernel_manager_class``), never by kernels.
"""

from __future__ import annotations

import time

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Float

__all__ = ["DISCONNECTED_TIMEOUT", "WatchedKernelManager"]

DISCONNECTED_TIMEOUT = 60.0


class WatchedKernelManager(AsyncMappingKernelManager):
    """``AsyncMappingKernelManager`` that also culls kernels left without a connection (see module doc)."""

    disconnected_timeout = Float(
        DISCONNECTED_TIMEOUT,
        config=True,
        help="Shut down a kernel that has had no websocket connection for this many seconds (0: never), "
        "even if it keeps sending messages. Checked every cull_interval seconds.",
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._alone_since: dict[str, float] = {}

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if self.disconnected_timeout > 0 and await self._cull_if_abandoned(kernel_id, time.monotonic()):
            return
        await super().cull_kernel_if_idle(kernel_id)

    async def _cull_if_abandoned(self, kernel_id: str, now: float) -> bool:
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            self._alone_since.pop(kernel_id, None)
            return False
        if self._kernel_connections.get(kernel_id, 0) or getattr(kernel, "execution_state", None) == "busy":
            self._alone_since.pop(kernel_id, None)
            return False
        since = self._alone_since.setdefault(kernel_id, now)
        if now - since < self.disconnected_timeout:
            return False
        self.log.warning(
            "Culling kernel %s: no page connected for %d s (widget traffic does not keep it alive).",
            kernel_id,
            now - since,
        )
        self._alone_since.pop(kernel_id, None)
        await self.shutdown_kernel(kernel_id)
        return True
