"""URL-query presets for the Voila dashboard.

An instructor shares a link such as ``...dashboard.ipynb?activation=sigmoid&depth=20`` and every student opens
the same scenario. Voila hands the query string to the kernel as the ``QUERY_STRING`` environment variable (a
preheated kernel gets it through Voila's request hook: :func:`query_from_request`);
:func:`parse_query` turns it into settings *safely*: only whitelisted field names, each converted by a strict
pattern (never ``eval``), capped to sizes that a shared 2-core machine can train, and then validated by the same
``NetConfig`` / ``TrainingSession`` rules as any other input and by the cost model (every combination within a
kernel's memory budget), without building a model. Whatever is wrong is dropped with a friendly
message, and the rest of the preset still applies.

No widget imports here: presets are parsed (and tested) without a browser or ipywidgets.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ..core.data import DATASETS
from ..core.session import DEFAULT_DATASET, NET_FIELDS, SessionSettings, _check_compatible
from ..nets import NetConfig
from ..nets.activations import ACTIVATIONS
from ..nets.cost import CLASS_LIMITS, check_budget
from ..validation import CELLS, INITS, KINDS, NORM_POSITIONS, NORMS, OPTIMIZERS

__all__ = [
    "DASHBOARD_FIELDS",
    "PRESET_FIELDS",
    "Preset",
    "describe_settings",
    "parse_query",
    "query_from_environment",
    "query_from_request",
]

QUERY_KEY_ENV = "GRADWIDGETS_QUERY_KEY"
"""The environment variable through which our server (:mod:`.server`) gives its kernels the key of its request
hook (``/voila/query/<key>/<kernel id>``); absent under plain Voila and the server extension."""
MAX_QUERY_LENGTH = 2000
MAX_FIELDS = 40
_INTEGER = re.compile(r"[+-]?\d{1,9}")
_DECIMAL = re.compile(r"[+-]?(?:\d{1,12}(?:\.\d{0,12})?|\.\d{1,12})(?:[eE][+-]?\d{1,3})?")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Field:
    """How one query parameter is read: its type, allowed choices or range (the dashboard's own caps, tighter
    than the library's, so a shared link cannot ask a classroom server for a 200-layer, 4096-wide net)."""

    kind: str  # "choice" | "int" | "float" | "bool"
    choices: tuple[str, ...] = ()
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        noun = "a whole number" if self.kind == "int" else "a number"
        if self.low_open:
            return f"{noun} above {self.low:g} and at most {self.high:g}"
        return f"{noun} from {self.low:g} to {self.high:g}"


def _capped(name: str) -> Field:
    """A numeric field read with the class's range (:data:`~gradwidgets.nets.cost.CLASS_LIMITS`): the same range
    the page's controls are held to."""
    limit = CLASS_LIMITS[name]
    return Field("int" if limit.integer else "float", low=limit.low, high=limit.high, low_open=limit.low_open)


PRESET_FIELDS: dict[str, Field] = {
    # the net (NetConfig fields)
    "kind": Field("choice", KINDS),
    "activation": Field("choice", tuple(ACTIVATIONS)),
    "depth": _capped("depth"),
    "width": _capped("width"),
    "residual": Field("bool"),
    "norm": Field("choice", NORMS),
    "norm_position": Field("choice", NORM_POSITIONS),
    "init": Field("choice", INITS),
    "init_gain": _capped("init_gain"),
    "cell": Field("choice", CELLS),
    "seq_len": _capped("seq_len"),
    "forget_bias": _capped("forget_bias"),
    "heads": _capped("heads"),
    # the run (TrainingSession options)
    "dataset": Field("choice", DATASETS),
    "optimizer": Field("choice", OPTIMIZERS),
    "lr": _capped("lr"),
    "batch_size": _capped("batch_size"),
    "seed": _capped("seed"),
    "freeze": _capped("freeze"),
    "clip": _capped("clip"),
}
"""Query parameters that preset the Playground; names and meanings are those of ``NetConfig`` and
``TrainingSession``."""

DASHBOARD_FIELDS: dict[str, Field] = {
    "play": Field("bool"),
    "tab": Field("choice", ("playground", "compare", "explain")),
}
"""Query parameters about the dashboard itself: start training at once, which tab to show first."""

_IGNORED = frozenset({"voila-template", "voila-theme", "template", "theme", "token"})
"""Query parameters Voila or Jupyter use themselves: not ours, not worth a warning."""


_ORDER = tuple(PRESET_FIELDS)
"""Validation order: ``kind`` before the fields whose validity depends on it (cell, activation, dataset...)."""


@dataclass(frozen=True)
class Preset:
    """What a URL asked for: ``settings`` go to the Playground, ``dashboard`` to the page, ``problems`` are
    friendly messages about what was ignored (empty when everything applied)."""

    settings: dict[str, Any] = field(default_factory=dict)
    dashboard: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _shown(text: str, limit: int = 30) -> str:
    """User text quoted for a message, cut short; HTML escaping is the renderer's job."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _convert(name: str, spec: Field, raw: str) -> Any:
    """``raw`` as the field's type, or ``ValueError`` with a message a student can act on."""
    text = raw.strip()
    expected = f"{name} should be {spec.describe()}, got {_shown(raw)}"
    if spec.kind == "choice":
        value = text.lower()
        if value not in spec.choices:
            raise ValueError(expected)
        return value
    if spec.kind == "bool":
        value = text.lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(expected)
    if spec.kind == "int":
        if not _INTEGER.fullmatch(text):
            raise ValueError(expected)
        number: float = int(text)
    else:
        if not _DECIMAL.fullmatch(text):
            raise ValueError(expected)
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(expected)
    too_low = number <= spec.low if spec.low_open else number < spec.low
    if too_low or number > spec.high:
        raise ValueError(expected)
    return number


def _session_error(settings: dict[str, Any], build: Callable[..., Any]) -> str | None:
    """Why ``settings`` cannot make a training session (``None`` if they can)."""
    try:
        build(**settings)
    except ValueError as error:
        return str(error)
    return None


def fits_the_class(**settings: Any) -> None:
    """``ValueError`` unless ``TrainingSession(**settings)`` would accept ``settings`` *and* training them fits a
    kernel's memory budget (:mod:`gradwidgets.nets.cost`). The session's own checks, without building its model
    and data: microseconds instead of the seconds a 60-block transformer takes to build."""
    net = {k: v for k, v in settings.items() if k in NET_FIELDS}
    run = {k: v for k, v in settings.items() if k not in NET_FIELDS}
    config = NetConfig().replace(**net)
    if run.get("dataset") is None:
        run["dataset"] = DEFAULT_DATASET[config.kind]
    session = SessionSettings(**run)
    _check_compatible(config, session)
    check_budget(config, session.batch_size, session.optimizer)


def parse_query(
    query: str | None,
    build: Callable[..., Any] = fits_the_class,
) -> Preset:
    """Read a URL query string (``"activation=sigmoid&depth=20"``, with or without a leading ``?``).

    Never raises on user input: unknown names, malformed or out-of-range values and combinations the library
    rejects (``kind=mlp&dataset=adding``) are dropped, each with a message in ``Preset.problems``; everything
    else applies. ``build`` validates a combination (:func:`fits_the_class` by default: what ``TrainingSession``
    accepts, within the class's per-kernel memory budget, without building a model).
    """
    if not query:
        return Preset()
    query = query.lstrip("?")
    if len(query) > MAX_QUERY_LENGTH:
        return Preset(problems=(f"The link's settings are too long ({len(query)} characters); all were ignored.",))
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="replace")
    except ValueError:
        return Preset(problems=(f"The link has more than {MAX_FIELDS} settings; all were ignored.",))

    problems: list[str] = []
    values: dict[str, Any] = {}
    dashboard: dict[str, Any] = {}
    for name, raw in pairs:
        key = name.strip().lower()
        spec = PRESET_FIELDS.get(key) or DASHBOARD_FIELDS.get(key)
        if spec is None:
            if key not in _IGNORED:
                known = ", ".join(sorted({*PRESET_FIELDS, *DASHBOARD_FIELDS}))
                problems.append(f"Unknown setting {_shown(name)} ignored. Known settings: {known}.")
            continue
        try:
            value = _convert(key, spec, raw)
        except ValueError as error:
            problems.append(f"{error}; ignored.")
            continue
        target = values if key in PRESET_FIELDS else dashboard
        if key in target and target[key] != value:
            problems.append(f"{key} was given more than once; the last value ({_shown(raw)}) is used.")
        target[key] = value

    settings = dict(values)
    conflict = _session_error(settings, build) if settings else None
    if conflict is not None:
        # Keep what fits together, in an order where each field's meaning is settled by the ones before it.
        settings = {}
        for key in sorted(values, key=_ORDER.index):
            trial = {**settings, key: values[key]}
            conflict = _session_error(trial, build)
            if conflict is None:
                settings = trial
            else:
                problems.append(f"{key}={values[key]!r} does not fit with the other settings ({conflict}); ignored.")
    return Preset(settings=settings, dashboard=dashboard, problems=tuple(problems))


def query_from_environment(environ: Any = None) -> str:
    """The page's query string as Voila passes it to the kernel (empty outside Voila)."""
    environ = os.environ if environ is None else environ
    return str(environ.get("QUERY_STRING", ""))


def preheated(environ: Any = None) -> bool:
    """Whether this kernel is one of Voila's preheated kernels, started before anyone asked for the page."""
    environ = os.environ if environ is None else environ
    return str(environ.get("VOILA_PREHEAT", "False")) == "True"


def query_from_request(environ: Any = None, wait: Callable[[], Any] | None = None) -> str:
    """The page's query string, also in a preheated kernel.

    A preheated kernel runs the notebook before the request exists, so ``QUERY_STRING`` is not set yet. Voila's
    request hook, ``voila.utils.wait_for_request``, blocks until a visitor is handed this kernel and then puts
    that request's variables (``QUERY_STRING`` among them) into ``os.environ``. Outside the pool it returns at
    once. ``wait`` replaces the hook (tests).
    """
    environ = os.environ if environ is None else environ
    if preheated(environ):
        _wait_quietly(wait)
    return query_from_environment(environ)


def _wait_quietly(wait: Callable[[], Any] | None) -> None:
    """Run the request hook; if the server closed the request channel (it is shutting down and this kernel
    with it), leave at once and quietly, rather than finish the cell into closed sockets (a kernel traceback
    on every Ctrl-C of the server). A hook that cannot connect returns and the page gets its defaults."""
    import threading

    if wait is None:
        from voila.utils import wait_for_request

        url = _request_hook_url()
        wait = wait_for_request if url is None else lambda: wait_for_request(url)
    failures: list[BaseException] = []
    previous = threading.excepthook

    def record(args: Any) -> None:  # the hook's thread raised: keep it, do not print it
        failures.append(args.exc_value)

    threading.excepthook = record
    try:
        wait()
    finally:
        threading.excepthook = previous
    if any(type(error).__name__.startswith("ConnectionClosed") for error in failures):
        os._exit(0)


def _request_hook_url(environ: Any = None) -> str | None:
    """Voila's request hook address with our server's key in it (``None``: Voila's own address, no key)."""
    environ = os.environ if environ is None else environ
    key = environ.get(QUERY_KEY_ENV)
    if not key:
        return None
    base = environ.get("VOILA_WS_BASE_URL", environ.get("VOILA_SERVER_URL", "/"))
    host = f"{environ.get('VOILA_APP_IP', '127.0.0.1')}:{environ.get('VOILA_APP_PORT', '8866')}"
    return f"{environ.get('VOILA_WS_PROTOCOL', 'ws')}://{host}{base}voila/query/{key}"


def describe_settings(settings: dict[str, Any]) -> str:
    """``activation=sigmoid, depth=20`` in field order: what a preset banner shows."""
    return ", ".join(f"{k}={settings[k]}" for k in _ORDER if k in settings)
