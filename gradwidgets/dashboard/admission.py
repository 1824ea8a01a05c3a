"""Who gets a kernel: a cap on the class's kernels, a per-address rate for new ones, and who owns which kernel.

Every page load starts (or takes from the pool) a kernel of ~300-600 MB; without limits one ``curl`` loop
started 33 kernels (14 GB) in 97 s. :class:`Admission` is the server's bookkeeping, pure Python (no tornado, no
Voila) so it is tested without a server:

* ``max_kernels``: visitors' kernels alive at once (the preheated pool's waiting kernels are not visitors');
  the next visitor gets the "class is full" page (:func:`class_full_page`) and nobody else notices anything;
* ``per_minute``: new kernels one address may get in any 60 s (0: no limit);
* owners: the page's cookie (a random visitor id) is recorded against the kernel the page was given, so only
  that browser can open the kernel's websocket, read it, or shut it down.
"""

from __future__ import annotations

import html
import secrets
import time
from collections import deque
from collections.abc import Callable, Container
from dataclasses import dataclass

from ..nets.cost import KERNEL_BUDGET_MB

__all__ = [
    "KERNEL_BUDGET_MB",
    "Admission",
    "Ticket",
    "class_full_page",
    "default_max_kernels",
    "new_visitor_id",
]

RESERVED_MB = 1024
"""Memory left to the server itself and the system when the default cap is computed."""
DEFAULT_PER_MINUTE = 10
"""New kernels one address may get per minute: a student reloading is fine, a loop is not."""
RETRY_SECONDS = 60
MAX_TRACKED_ADDRESSES = 10_000


def default_max_kernels(available_mb: float, pool_size: int, budget_mb: float = KERNEL_BUDGET_MB) -> int:
    """How many visitors' kernels fit in ``available_mb`` of free memory at ``budget_mb`` each (the cost
    model's per-kernel budget: :mod:`gradwidgets.nets.cost`), after the server's reserve and the pool's
    waiting kernels; at least 1 (a laptop still serves its owner)."""
    usable = available_mb - RESERVED_MB - pool_size * budget_mb
    return max(1, int(usable // budget_mb))


def new_visitor_id() -> str:
    """A random visitor id for the page cookie (unguessable: it is what lets a browser use its kernel)."""
    return secrets.token_urlsafe(24)


@dataclass
class Ticket:
    """A place in the class, held while a page is being given its kernel (counted against the cap until it
    becomes a kernel or is released)."""

    visitor: str
    settled: bool = False


class Admission:
    """The cap, the per-address rate and the owners of the kernels (see the module docstring)."""

    def __init__(self, max_kernels: int, per_minute: int = DEFAULT_PER_MINUTE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_kernels < 1:
            raise ValueError(f"max_kernels must be at least 1, got {max_kernels}")
        if per_minute < 0:
            raise ValueError(f"per_minute must be 0 (no limit) or more, got {per_minute}")
        self.max_kernels = max_kernels
        self.per_minute = per_minute
        self._clock = clock
        self._owners: dict[str, str] = {}
        self._pending: list[Ticket] = []
        self._recent: dict[str, deque[float]] = {}

    def in_use(self, alive: Container[str]) -> int:
        """Visitors' kernels still alive (``alive``: the kernel manager), plus pages being given one."""
        self._owners = {k: v for k, v in self._owners.items() if k in alive}
        return len(self._owners) + len(self._pending)

    def admit(self, address: str, visitor: str, alive: Container[str]) -> Ticket | str:
        """A ticket for a new kernel, or why not (``"full"``: the cap, ``"rate"``: this address's rate)."""
        if self.in_use(alive) >= self.max_kernels:
            return "full"
        if self.per_minute:
            now = self._clock()
            recent = self._recent.setdefault(address, deque())
            while recent and now - recent[0] >= 60.0:
                recent.popleft()
            if len(recent) >= self.per_minute:
                return "rate"
            recent.append(now)
            if len(self._recent) > MAX_TRACKED_ADDRESSES:
                self._forget_quiet_addresses(now)
        ticket = Ticket(visitor)
        self._pending.append(ticket)
        return ticket

    def settle(self, ticket: Ticket, kernel_id: str) -> None:
        """The page got ``kernel_id``: it belongs to the ticket's visitor from now on."""
        if not ticket.settled:
            ticket.settled = True
            self._owners[kernel_id] = ticket.visitor
            self._pending.remove(ticket)

    def release(self, ticket: Ticket) -> None:
        """The page ended without a kernel (an error, a closed connection): free its place."""
        if not ticket.settled:
            ticket.settled = True
            self._pending.remove(ticket)

    def owns(self, visitor: str | None, kernel_id: str) -> bool:
        """Whether the page cookie ``visitor`` was given ``kernel_id`` (constant-time comparison)."""
        owner = self._owners.get(kernel_id)
        return bool(visitor and owner) and secrets.compare_digest(str(owner), str(visitor))

    def _forget_quiet_addresses(self, now: float) -> None:
        self._recent = {a: r for a, r in self._recent.items() if r and now - r[-1] < 60.0}


def class_full_page(reason: str, retry_seconds: int = RETRY_SECONDS) -> str:
    """The page a visitor over the cap (or the rate) gets: friendly, and it tries again by itself."""
    if reason == "rate":
        why = "This computer opened many dashboards very quickly, so the server is pausing new ones for it."
    else:
        why = "Every place on this server is taken right now (each student's dashboard needs its own memory)."
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{int(retry_seconds)}'>"
        "<title>The class is full</title></head>"
        "<body style='font-family:sans-serif;max-width:36em;margin:4em auto;line-height:1.5'>"
        "<h1>The class is full: try again in a minute</h1>"
        f"<p>{html.escape(why)}</p>"
        f"<p>This page reloads itself in {int(retry_seconds)} seconds. A place frees up as soon as someone "
        "closes their tab.</p></body></html>"
    )
