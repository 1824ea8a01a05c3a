"""Guards that also work where jupyter_server, not our Voila app, serves the kernels (Binder, JupyterHub).

Both the framings jupyter_server reads from a kernel websocket trust a count at the start of a binary frame: the v1
reader builds a list of as many offsets as the first 8 bytes say (``10**17``: the server stops answering and grows
by gigabytes), the legacy reader builds a ``struct`` format string of as many characters as the first 4 bytes say
(2**31: two gigabytes at once). Any client allowed on the websocket can send such a frame: on our class server the
page's owner, so one student could freeze everyone's server. :class:`GuardedKernelConnection` checks a frame's
counts and offsets before jupyter_server parses it and drops a malformed one.

:class:`CappedKernelManager` caps the kernels of a jupyter_server (``max_kernels``, default: the free memory in
default-sized kernels, at least 2): a new kernel past the cap is a 503 instead of a server out of memory.

Both are jupyter_server configuration (``binder/jupyter_server_config.json``, the chart's ``jupyter_server_config``
in ``deploy/jupyterhub/values.yaml``); our own server (:mod:`.server`) uses the connection too.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import psutil
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer

from ..nets.cost import BASE_KERNEL_MB
from .admission import RETRY_SECONDS

__all__ = ["MAX_PARTS", "CappedKernelManager", "GuardedKernelConnection", "valid_legacy_frame", "valid_v1_frame"]

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
MAX_PARTS = 64
"""A message has a channel, 4 JSON parts and its binary buffers; a claimed count beyond this is not a message."""


def _offsets_fit(offsets: list[int], length: int) -> bool:
    return all(a <= b for a, b in zip(offsets, offsets[1:], strict=False)) and (not offsets or offsets[-1] <= length)


def valid_v1_frame(message: Any) -> bool:
    """Whether ``message`` is a v1 frame jupyter_server can parse cheaply: 8-byte count, that many offsets,
    increasing and inside the frame (never reads more than :data:`MAX_PARTS` offsets)."""
    if not isinstance(message, bytes) or len(message) < 8:
        return False
    count = int.from_bytes(message[:8], "little")
    if not 3 <= count <= MAX_PARTS + 2 or len(message) < 8 * (count + 1):
        return False
    offsets = [int.from_bytes(message[8 * (i + 1): 8 * (i + 2)], "little") for i in range(count)]
    return offsets[0] >= 8 * (count + 1) and _offsets_fit(offsets, len(message))


def valid_legacy_frame(message: Any) -> bool:
    """Whether ``message`` is a text message or a legacy binary frame with a sane buffer count (4-byte big-endian
    count, that many 4-byte offsets)."""
    if isinstance(message, str):
        return True
    if not isinstance(message, bytes) or len(message) < 4:
        return False
    (count,) = struct.unpack("!i", message[:4])
    if not 1 <= count <= MAX_PARTS or len(message) < 4 * (count + 1):
        return False
    return _offsets_fit(list(struct.unpack("!" + "I" * count, message[4: 4 * (count + 1)])), len(message))


class GuardedKernelConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket connection, dropping frames whose counts would make it allocate without
    bound (module docstring). A well-formed message passes unchanged."""

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        v1 = self.subprotocol == V1_PROTOCOL
        if not (valid_v1_frame(incoming_msg) if v1 else valid_legacy_frame(incoming_msg)):
            self.log.warning("Dropped a malformed %s kernel websocket frame (%d bytes) for kernel %s",
                             "v1" if v1 else "legacy", len(incoming_msg or b""), self.kernel_id)
            return
        super().handle_incoming_message(incoming_msg)


def available_mb() -> float:
    """Free memory for kernels: the machine's, or the container's limit if lower (a pod sees its node's memory)."""
    free = psutil.virtual_memory().available / 2**20
    try:
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return free
    if raw == "max":
        return free
    return min(free, (int(raw) - int(current)) / 2**20)


MIN_KERNELS = 2
"""The default cap's floor: a user's own server holds the dashboard and a tutorial notebook side by side."""


class CappedKernelManager(AsyncMappingKernelManager):
    """jupyter_server's kernel manager with a cap: past ``max_kernels`` running kernels, a new one is refused with
    a 503 (the page shows it; a restart of an existing kernel is not a new one). Here the server is one user's
    (Binder, a hub's pod): the cap stops a runaway loop of kernels, not a class, so its default counts kernels of
    the default size (:data:`~gradwidgets.nets.cost.BASE_KERNEL_MB`) and allows at least two."""

    max_kernels = Integer(
        0, config=True, help="Kernels alive at once; a new one past the cap is refused (503). 0: as many "
        "default-sized kernels as fit in the free memory (or the container's limit) at start, and at least 2.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cap = self.max_kernels or max(MIN_KERNELS, int(available_mb() // BASE_KERNEL_MB))
        self.log.info("At most %d kernels at once on this server.", self.cap)

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        kernel_id = kwargs.get("kernel_id")
        if (kernel_id is None or kernel_id not in self) and len(self.list_kernel_ids()) >= self.cap:
            self.log.warning("Refused a new kernel: %d running, the cap is %d", len(self.list_kernel_ids()), self.cap)
            raise web.HTTPError(503, f"{self.cap} kernels running", reason=f"The class is full ({self.cap} kernels): "
                                f"try again in {RETRY_SECONDS} s, or close another tab of this server")
        return str(await super().start_kernel(*args, **kwargs))
