"""The Voila server ``gradwidgets dashboard`` runs: Voila, with a guard on every request a hostile room can make.

Run as ``python -m gradwidgets.dashboard.server NOTEBOOK [Voila options]`` (the CLI builds that command). It is
Voila 0.5's own application with five handlers swapped for guarded subclasses; everything else is Voila's:

* the **page** (``/``): a visitor over the kernel cap or their address's rate gets the "class is full" page (503,
  it reloads itself); everyone else gets the dashboard plus a signed, HTTP-only visitor cookie, and the kernel
  the page was given is recorded as theirs (:mod:`.admission`);
* the kernel's **websocket**: only Jupyter's v1 framing (``v1.kernel.websocket.jupyter.org``, what Voila's page
  asks for) and only with the cookie of the page that owns the kernel. A client on the legacy framing got binary
  messages that Voila's handler then parsed as v1, reading a ~1e17-long offset list: the server froze and grew
  by gigabytes (issue 21). The header is also read defensively here, whatever the framing;
* ``/api/kernels/<id>`` (read, delete) and the page's **shutdown beacon** (``/voila/api/shutdown/<id>``): only
  with the owner's cookie, else 403. The beacon is why the xsrf check is off (standalone Voila never sets the
  ``_xsrf`` cookie the beacon would have to echo); the owner cookie is what protects it instead;
* the **template static files**: a path that is not ``<template>/static/<file>`` (``../../etc/passwd``) is a
  404 instead of Voila's AssertionError (500);
* the preheated kernels' **request hook** (``/voila/query/<kernel id>``, where a pooled kernel waits for its
  visitor's query string): its only client is the kernel itself, never a browser, so it is keyed by a secret the
  server hands its kernels in their environment (:data:`~.presets.QUERY_KEY_ENV`); without the key, 403. (The
  owner's cookie would not do: the page never connects there.)

Every kernel websocket also goes through :class:`~.connection.GuardedKernelConnection`: a frame whose counts would
make jupyter_server allocate without bound is dropped, so not even a kernel's owner can freeze the class.

**Where each guard applies.** On Binder and JupyterHub the dashboard is served by Voila's *server extension*
(``/voila/render/...``) inside the user's own ``jupyter server``; this module does not run there, and
jupyter_server's own kernel API and websocket serve. There the server's authentication (Binder's token, the hub's
cookie) refuses every request of a stranger (tests/test_extension_guard.py: the page redirects to the login, the
kernel API answers 403), each user has a server (pod) of their own, and there is no request hook (no preheated
pool). What a user of that server can still do to it is guarded by jupyter_server configuration, shipped in
``binder/jupyter_server_config.json`` and the chart's ``jupyter_server_config`` (``deploy/jupyterhub/values.yaml``):
``GuardedKernelConnection`` (malformed frames dropped, on both framings) and
:class:`~.connection.CappedKernelManager` (kernels capped at the container's memory at the per-kernel budget, 503
past it). Not there: the per-address rate and the class-full page (one user per server), the owner cookie (the
server's own authentication), the refusal of the legacy framing (jupyter_server reads it correctly; its frames are
checked instead).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from typing import Any

import psutil
from jupyter_core.utils import ensure_async
from jupyter_server.services.kernels.handlers import KernelHandler
from tornado import web
from traitlets import Integer
from voila.app import Voila
from voila.request_info_handler import RequestInfoSocketHandler
from voila.shutdown_kernel_handler import VoilaShutdownKernelHandler
from voila.static_file_handler import TemplateStaticFileHandler
from voila.tornado.handler import TornadoVoilaHandler
from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

from ..runtime.priority import SHARED_SERVER_ENV
from .admission import DEFAULT_PER_MINUTE, RETRY_SECONDS, Admission, Ticket, class_full_page, default_max_kernels
from .admission import new_visitor_id as _new_visitor_id
from .connection import GuardedKernelConnection
from .pool_priority import kernel_pid, pool_priority
from .presets import QUERY_KEY_ENV

__all__ = ["GradwidgetsVoila", "main", "read_v1_header"]

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"
COOKIE = "gradwidgets_visitor"
ADMISSION = "gradwidgets_admission"
"""The tornado settings key of the server's :class:`~.admission.Admission`."""
MAX_PARTS = 64
"""A v1 message has 5 parts plus its binary buffers; a claimed count beyond this is not a v1 message."""
_TEMPLATE_STATIC = re.compile(r"[A-Za-z0-9_.-]+/static/[^\\]+")


def read_v1_header(message: bytes) -> dict | None:
    """The header of a v1-framed kernel message, or ``None`` if ``message`` is not one (any framing, any
    bytes: never allocates more than ``MAX_PARTS`` offsets, unlike Voila's reader)."""
    if len(message) < 8:
        return None
    count = int.from_bytes(message[:8], "little")
    if not 3 <= count <= MAX_PARTS or len(message) < 8 * (count + 1):
        return None
    offsets = [int.from_bytes(message[8 * (i + 1): 8 * (i + 2)], "little") for i in range(count)]
    try:
        header = json.loads(message[offsets[1]: offsets[2]].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _admission(handler: web.RequestHandler) -> Admission:
    return handler.settings[ADMISSION]


def _visitor(handler: web.RequestHandler) -> str | None:
    raw = handler.get_signed_cookie(COOKIE)
    return raw.decode("ascii", "replace") if raw else None


def _require_owner(handler: web.RequestHandler, kernel_id: str) -> None:
    if not _admission(handler).owns(_visitor(handler), kernel_id):
        raise web.HTTPError(403, "this kernel belongs to another page")


class GuardedPageHandler(TornadoVoilaHandler):
    """The dashboard page, behind the kernel cap and the per-address rate; sets the visitor cookie."""

    _ticket: Ticket | None = None

    @web.authenticated  # with --token, a stranger is sent to the login page before taking a place or the rate
    async def get(self, path: str | None = None) -> None:
        if path:  # not the notebook: Voila redirects to its file handler, no kernel is started
            await super().get(path=path)
            return
        admission = _admission(self)
        visitor = _visitor(self)
        if visitor is None:
            visitor = _new_visitor_id()
            self.set_signed_cookie(COOKIE, visitor, expires_days=None, httponly=True, samesite="Lax",
                                   path=self.base_url)
        ticket = admission.admit(self.request.remote_ip or "", visitor, self.settings["kernel_manager"])
        if isinstance(ticket, str):
            self.log.warning("No kernel for %s: %s (%d kernels in use, cap %d)", self.request.remote_ip,
                             "the class is full" if ticket == "full" else "too many new pages from this address",
                             admission.in_use(self.settings["kernel_manager"]), admission.max_kernels)
            self.set_status(503)
            self.set_header("Retry-After", str(RETRY_SECONDS))
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(class_full_page(ticket))
            return
        self._ticket = ticket
        try:
            await super().get(path=path)
        finally:
            admission.release(ticket)

    @property
    def kernel_manager(self) -> Any:
        manager = self.settings["kernel_manager"]
        return manager if self._ticket is None else _SettlingKernels(manager, self._settle)

    def _settle(self, kernel_id: str) -> None:
        if self._ticket is not None:
            _admission(self).settle(self._ticket, kernel_id)


class _SettlingKernels:
    """The kernel manager as the page handler sees it: the kernel it starts or takes from the pool is recorded
    as the visitor's (Voila's handler gets the id from these two calls and nowhere else)."""

    def __init__(self, manager: Any, settle: Any) -> None:
        self._manager = manager
        self._settle = settle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:
        kernel_id = await ensure_async(self._manager.start_kernel(*args, **kwargs))
        self._settle(kernel_id)
        return kernel_id

    async def get_rendered_notebook(self, *args: Any, **kwargs: Any) -> Any:
        priority = pool_priority()
        async with priority.visitor_waits(self._next_ready(kwargs.get("notebook_name", args[0] if args else None))):
            result = await self._manager.get_rendered_notebook(*args, **kwargs)
            self._settle(result[2])
            await priority.claimed(kernel_pid(self._manager.get_kernel(result[2])))
        return result

    def _next_ready(self, notebook_name: Any) -> bool:
        """Whether the pooled kernel this visitor will get has finished starting (Voila's pool: a list of tasks)."""
        pool: list[Any] = getattr(self._manager, "_pools", {}).get(notebook_name) or []
        return bool(pool) and bool(pool[0].done())


class GuardedKernelWebsocketHandler(VoilaKernelWebsocketHandler):
    """The kernel's channels: v1 framing only, owner's cookie only; headers read defensively."""

    async def get(self, kernel_id: str) -> None:
        requested = {p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")}
        if V1_PROTOCOL not in requested:
            raise web.HTTPError(400, f"kernel websockets must use the {V1_PROTOCOL} subprotocol")
        _require_owner(self, kernel_id)
        await super().get(kernel_id)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A plain-text refusal (Voila's server has no HTML error template for websocket handlers)."""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    def write_message(self, message: Any, binary: bool = False) -> Any:
        if isinstance(message, bytes):
            header = read_v1_header(message)
        elif isinstance(message, dict):
            header = message.get("header")
        else:
            header = None
        if isinstance(header, dict) and header.get("msg_type") == "execute_input":
            return None  # what Voila's handler drops: the page never shows the code
        return super(VoilaKernelWebsocketHandler, self).write_message(message, binary)


class GuardedKernelHandler(KernelHandler):
    """``/api/kernels/<id>``: the owner's page may read or shut its kernel down; nobody else may do anything."""

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        kernel_id = self.path_kwargs.get("kernel_id") or (self.path_args[0] if self.path_args else "")
        _require_owner(self, kernel_id)


class GuardedShutdownHandler(VoilaShutdownKernelHandler):
    """The page's shutdown beacon (on unload): only for the kernel of the page that sends it."""

    async def post(self, kernel_id: str) -> None:
        _require_owner(self, kernel_id)
        await super().post(kernel_id)


class GuardedRequestInfoHandler(RequestInfoSocketHandler):
    """``/voila/query/<key>/<kernel id>``: where a preheated kernel waits for its visitor's request (the link's
    preset). Only the server's kernels know ``key`` (:data:`~.presets.QUERY_KEY_ENV`); anyone else (Voila's own
    path without a key, or a wrong key) is refused with 403, so a stranger who learns a kernel id can neither read
    the visitor's request nor take the kernel's place and leave its page waiting."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        given = self.path_kwargs.get("key") or ""
        if not secrets.compare_digest(given, self.settings[QUERY_KEY_SETTING]):
            raise web.HTTPError(403, "only the server's own kernels may wait for a request here")
        return super().get(*args, **kwargs)

    def open(self, key: str | None = None, kernel_id: str = "") -> None:  # type: ignore[override]
        super().open(kernel_id)


QUERY_KEY_SETTING = "gradwidgets_query_key"
_QUERY_PATH = re.compile(r"(.*/voila/query/)(\(\?P<kernel_id>.*)$")


class SafeTemplateStaticFileHandler(TemplateStaticFileHandler):
    """Voila's template static files; a malformed or climbing path is a 404, not an AssertionError (500)."""

    def parse_url_path(self, path: str) -> str:
        if not _TEMPLATE_STATIC.fullmatch(path) or ".." in path.split("/"):
            raise web.HTTPError(404)
        return super().parse_url_path(path)


GUARDED = {
    TornadoVoilaHandler: GuardedPageHandler,
    VoilaKernelWebsocketHandler: GuardedKernelWebsocketHandler,
    KernelHandler: GuardedKernelHandler,
    VoilaShutdownKernelHandler: GuardedShutdownHandler,
    TemplateStaticFileHandler: SafeTemplateStaticFileHandler,
}


class GradwidgetsVoila(Voila):
    """Voila with the guarded handlers (module docstring), the kernel cap and the per-address rate."""

    max_kernels = Integer(
        0, config=True, help="Visitors' kernels alive at once; the next visitor gets the 'class is full' page. "
        "0: as many as fit in the free memory at start at the per-kernel budget.",
    )
    kernels_per_minute = Integer(
        DEFAULT_PER_MINUTE, config=True, help="New kernels one address may get in any 60 s (0: no limit).",
    )

    def init_settings(self) -> dict:
        os.environ[QUERY_KEY_ENV] = secrets.token_urlsafe(24)  # before the pool's first kernel: kernels inherit it
        os.environ.setdefault(SHARED_SERVER_ENV, "1")  # kernels lower their session's priority while training
        settings = super().init_settings()
        cap = self.max_kernels or default_max_kernels(
            psutil.virtual_memory().available / 2**20, self.voila_configuration.default_pool_size
            if self.voila_configuration.preheat_kernel else 0,
        )
        settings[ADMISSION] = Admission(cap, self.kernels_per_minute)
        settings["disable_check_xsrf"] = True  # the beacon (module docstring); the owner cookie guards it
        settings["kernel_websocket_connection_class"] = GuardedKernelConnection
        settings[QUERY_KEY_SETTING] = os.environ[QUERY_KEY_ENV]
        self.log.info("At most %d visitors' kernels at once; %s new kernels per address per minute.", cap,
                      self.kernels_per_minute or "unlimited")
        return settings

    def init_handlers(self) -> list:
        rules = []
        for path, handler, *rest in super().init_handlers():
            if handler is RequestInfoSocketHandler:
                path, handler = _QUERY_PATH.sub(r"\1(?:(?P<key>[A-Za-z0-9_-]+)/)?\2", path), GuardedRequestInfoHandler
            rules.append((path, GUARDED.get(handler, handler), *rest))
        return rules


main = GradwidgetsVoila.launch_instance

if __name__ == "__main__":
    main()
