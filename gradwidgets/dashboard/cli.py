"""The ``gradwidgets`` command: ``gradwidgets dashboard`` serves the Voila dashboard.

Where the dashboard notebook comes from, in order:

1. a source checkout or editable install: ``notebooks/dashboard.ipynb`` next to the package folder;
2. a copy shipped inside the package (``gradwidgets/notebooks/dashboard.ipynb``, if a build put one there);
3. otherwise (a plain ``pip install``), the notebook is written from :func:`gradwidgets.dashboard.dashboard_notebook`
   into a temporary folder that is removed when the server stops. Its one code cell only calls
   ``gradwidgets.dashboard.app()`` (defined in :mod:`.page`), so nothing of substance lives in the notebook and
   the copies cannot drift apart (a test compares the checkout's notebook with the generated one).

Voila runs as a child process (:mod:`.supervisor`: SIGINT, SIGTERM and SIGHUP stop it and every kernel, and
its temp folder goes) with ``OMP_NUM_THREADS=1`` (every visitor gets a kernel of their own; one torch thread
each keeps many kernels from oversubscribing the machine), sources stripped and tracebacks hidden, and:

* a **preheated kernel pool** (``--pool-size``, default 1): kernels run the notebook's imports and build a
  default dashboard *before* anyone asks; the URL preset reaches them through Voila's request hook
  (:func:`gradwidgets.dashboard.presets.query_from_request`);
* **culling that traffic cannot defeat** (:mod:`.culling`): a kernel with no page connected for 60 s goes,
  playing or not; the stock idle culler still removes idle kernels after 15 minutes;
* the ``gradwidgets`` **Voila template** (``share/voila/templates``): the lab template without the two
  stylesheets it fetches from a CDN (Voila's bundle already carries Font Awesome), so no request leaves the
  machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import ipaddress
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from ..nets.cost import KERNEL_BUDGET_MB
from .admission import DEFAULT_PER_MINUTE
from .culling import DISCONNECTED_TIMEOUT
from .supervisor import run_supervised, temporary_root

__all__ = ["build_parser", "dashboard_environment", "find_dashboard", "main", "voila_command"]

DEFAULT_PORT = 8866
DEFAULT_IP = "127.0.0.1"
DASHBOARD = "dashboard.ipynb"
KERNEL_IDLE_CULL_SECONDS = 900
"""The stock culler: a kernel without a connection *and* without any traffic goes after this long."""
CULL_INTERVAL_SECONDS = 10
DEFAULT_POOL_SIZE = 1
TEMPLATE = "gradwidgets"
SHARE = Path(__file__).resolve().parent / "share"
"""Holds ``voila/templates/gradwidgets``; prepended to the server's ``JUPYTER_PATH``."""
WILDCARD_IPS = frozenset({"", "0.0.0.0", "::", "*"})
AUTO_TOKEN = "auto"
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{6,128}")
SERVER_MODULE = "gradwidgets.dashboard.server"
"""Voila's application with the class guards (:mod:`.server`): what ``python -m`` runs."""


def _package_dir() -> Path:
    """The ``gradwidgets`` package folder (this module lives in its ``dashboard`` sub-package)."""
    return Path(__file__).resolve().parents[1]


def find_dashboard() -> Path | None:
    """The dashboard notebook of a source checkout or a shipped copy, or ``None`` (then it is generated)."""
    for candidate in (_package_dir().parent / "notebooks" / DASHBOARD, _package_dir() / "notebooks" / DASHBOARD):
        if candidate.is_file():
            return candidate
    return None


@contextlib.contextmanager
def dashboard_path() -> Iterator[Path]:
    """The notebook to serve: found on disk, or written to a temporary folder removed afterwards."""
    found = find_dashboard()
    if found is not None:
        yield found
        return
    import nbformat

    from .page import dashboard_notebook

    folder = Path(tempfile.mkdtemp(prefix="gradwidgets-dashboard-"))
    try:
        path = folder / DASHBOARD
        nbformat.write(dashboard_notebook(), str(path))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


FOREIGN_EXTENSIONS = ("@jupyter-notebook/lab-extension", "@jupyterhub/jupyter-server-proxy")
"""JupyterLab extensions installed alongside (Notebook 7, jupyter-server-proxy) that need JupyterLab's notebook
tracker or file browser, which a Voila page does not have."""


def voila_command(
    notebook: Path,
    port: int,
    ip: str,
    open_browser: bool,
    theme: str = "light",
    pool_size: int = DEFAULT_POOL_SIZE,
    temp_root: Path | None = None,
    max_kernels: int = 0,
    kernels_per_minute: int = DEFAULT_PER_MINUTE,
    token: bool = False,
) -> list[str]:
    """The server's invocation (Voila with our guards, :mod:`.server`), as a list (never a shell string).
    ``pool_size`` 0 turns the preheated pool off; ``max_kernels`` 0 lets the server size the cap from free
    memory; ``kernels_per_minute`` 0 lifts the per-address rate; ``token``: require the token that the
    environment's ``JUPYTER_TOKEN_FILE`` holds (never on the command line, which every local user can read)."""
    command = [
        sys.executable,
        "-m",
        SERVER_MODULE,
        str(notebook),
        f"--port={port}",
        f"--Voila.ip={ip}",
        f"--theme={theme}",
        f"--Voila.open_browser={open_browser}",
        "--strip_sources=True",
        "--show_tracebacks=False",
        f"--template={TEMPLATE}",
        "--VoilaConfiguration.multi_kernel_manager_class=gradwidgets.dashboard.culling.WatchedKernelManager",
        f"--WatchedKernelManager.disconnected_timeout={DISCONNECTED_TIMEOUT:g}",
        # preheated kernels wait at idle priority, so refilling the pool never slows the page being opened
        "--WatchedKernelManager.kernel_manager_class=gradwidgets.dashboard.pool_priority.PooledKernel",
        f"--MappingKernelManager.cull_idle_timeout={KERNEL_IDLE_CULL_SECONDS}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_SECONDS}",
        # Voila loads every JupyterLab extension installed; these fail in a page that is not JupyterLab (console
        # errors on every load, voila-dashboards/voila#1514). An allowlist would also drop Voila's own widget
        # registry, so the known offenders are denied by name.
        *(f"--VoilaConfiguration.extension_denylist={name}" for name in FOREIGN_EXTENSIONS),
    ]
    command += [f"--GradwidgetsVoila.max_kernels={max_kernels}",
                f"--GradwidgetsVoila.kernels_per_minute={kernels_per_minute}"]
    if token:
        command.append("--Voila.auto_token=True")  # the identity provider reads JUPYTER_TOKEN_FILE
    if pool_size > 0:
        command += ["--preheat_kernel=True", f"--pool_size={pool_size}"]
    if temp_root is not None:
        command.append(f"--Voila.connection_dir_root={temp_root}")
    return command


def dashboard_environment(
    base: dict[str, str] | None = None, ip: str = DEFAULT_IP, temp_root: Path | None = None
) -> dict[str, str]:
    """The server's environment (kernels inherit it): one intra-op torch thread unless the user chose; our
    Voila template on ``JUPYTER_PATH``; where preheated kernels reach the server's request hook
    (``VOILA_APP_IP``: a wildcard address listens on loopback too); ``TMPDIR`` inside ``temp_root``."""
    env = dict(os.environ if base is None else base)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    env["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(SHARE), env.get("JUPYTER_PATH", "")) if p)
    env["VOILA_APP_IP"] = "127.0.0.1" if ip in WILDCARD_IPS else ip.strip("[]")
    if temp_root is not None:
        env["TMPDIR"] = str(temp_root)
    return env


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, got {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be in 1-65535, got {value}")
    return value


def _pool_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pool size must be a whole number, got {text!r}") from None
    if not 0 <= value <= 32:
        raise argparse.ArgumentTypeError(f"pool size must be in 0-32, got {value}")
    return value


def _bounded(name: str, low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be in {low}-{high}, got {value}")
        return value

    return convert


_max_kernels = _bounded("max kernels", 0, 1024)
_per_minute = _bounded("kernels per minute", 0, 1000)


def _token(text: str) -> str:
    """A class token: letters, digits, ``-`` and ``_`` (it goes into a link), 6-128 of them."""
    if text == AUTO_TOKEN:
        return secrets.token_urlsafe(12)
    if not TOKEN_PATTERN.fullmatch(text):
        raise ValueError(f"--token must be 6-128 letters, digits, '-' or '_', got {len(text)} characters")
    return text


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` (as given to ``--ip``) serves this machine only."""
    host = ip.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="gradwidgets",
        description="Jupyter widgets that make vanishing and exploding gradients visible, live, in PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"gradwidgets {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    dash = commands.add_parser(
        "dashboard",
        help="serve the interactive dashboard with Voila",
        description="Serve the gradwidgets dashboard with Voila. Preset a scenario from the URL, e.g. "
        "http://127.0.0.1:8866/?activation=sigmoid&depth=20",
    )
    dash.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port to serve on (default {DEFAULT_PORT})")
    dash.add_argument(
        "--ip",
        default=DEFAULT_IP,
        help=f"address to listen on (default {DEFAULT_IP}: this machine only; 0.0.0.0 shares it on the network)",
    )
    dash.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    dash.add_argument("--theme", choices=("light", "dark"), default="light", help="page theme (default light)")
    dash.add_argument(
        "--pool-size",
        type=_pool_size,
        default=DEFAULT_POOL_SIZE,
        help=f"kernels kept started and ready for the next visitors (default {DEFAULT_POOL_SIZE}; 0: none). "
        "For a class arriving at once, 3-4; each costs a kernel's memory (~300 MB) while it waits",
    )
    dash.add_argument(
        "--max-kernels",
        type=_max_kernels,
        default=0,
        help=f"students served at once (each has a kernel of up to {KERNEL_BUDGET_MB} MB); the next one gets "
        "a 'class is full, try again in a minute' page. Default: as many as fit in the free memory",
    )
    dash.add_argument(
        "--kernels-per-minute",
        type=_per_minute,
        default=DEFAULT_PER_MINUTE,
        help=f"new dashboards one address may open per minute (default {DEFAULT_PER_MINUTE}; 0: no limit). "
        "Behind a proxy or a school NAT every student has the same address: raise it or use 0",
    )
    dash.add_argument(
        "--token",
        nargs="?",
        const=AUTO_TOKEN,
        default=None,
        help="require a token in the link (the class password). Without a value a random one is made "
        "(before a PATH, write --token=WORD or put --token last); the link to share is printed",
    )
    dash.add_argument("--dry-run", action="store_true", help="print the Voila command and exit")
    _add_watch_parser(commands, dash)
    return parser


def _add_watch_parser(commands: argparse._SubParsersAction, dash: argparse.ArgumentParser) -> None:
    """``gradwidgets watch PATH [PATH ...]``: the dashboard's server options (shared, not copied) plus the paths."""
    watch = commands.add_parser(
        "watch",
        help="follow run files (GradientLogger) live in the browser",
        description="Serve a Voila page with gradient bars, heatmap, loss and verdicts of run files, following "
        "them while a script writes them. PATH is a .gwrun file or a folder of them (up to 4 side by side).",
    )
    watch.add_argument("paths", nargs="+", metavar="PATH", help="a run file or a folder of run files")
    for action in dash._actions:
        if action.dest != "help":
            watch._add_action(action)  # what argparse's parents= does: the very same options as `dashboard`


def _watch(args: argparse.Namespace) -> int:
    """Serve the watch page through the same Voila command and lifecycle as the dashboard."""
    if importlib.util.find_spec("voila") is None:
        _say("gradwidgets watch needs Voila: pip install 'gradwidgets[dashboard]'", sys.stderr)
        return 1
    from .watch import watch_notebook_path

    paths = [Path(p).expanduser().resolve() for p in args.paths]
    missing = [p for p in paths if not p.exists() and not p.parent.is_dir()]
    if missing:
        _say(f"gradwidgets watch: no run file or folder at {missing[0]}", sys.stderr)
        return 1
    return _serve(args, watch_notebook_path(paths), [f"gradwidgets watch: {', '.join(str(p) for p in paths)}"])


def _say(text: str, stream: TextIO | None = None) -> None:
    """The CLI's own messages (usage, the URL): flushed at once, since Voila's log follows on the same terminal."""
    stream = sys.stdout if stream is None else stream
    stream.write(text + "\n")
    stream.flush()


def _dashboard(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("voila") is None:
        _say("The dashboard needs Voila: pip install 'gradwidgets[dashboard]'", sys.stderr)
        return 1
    return _serve(args, dashboard_path(), [], preset_hint=True)


def _serve(
    args: argparse.Namespace,
    notebook_path: contextlib.AbstractContextManager[Path],
    lines: list[str],
    preset_hint: bool = False,
) -> int:
    """What ``dashboard`` and ``watch`` share: one temp root, the Voila command, the supervised lifecycle."""
    with temporary_root() as temp, notebook_path as notebook:
        try:
            token = _token(args.token) if args.token is not None else ""
        except ValueError as error:
            _say(f"gradwidgets {args.command}: {error}", sys.stderr)
            return 2
        command = voila_command(
            notebook,
            args.port,
            args.ip,
            open_browser=not args.no_browser,
            theme=args.theme,
            pool_size=args.pool_size,
            temp_root=temp,
            max_kernels=args.max_kernels,
            kernels_per_minute=args.kernels_per_minute,
            token=bool(token),
        )
        if args.dry_run:
            _say(" ".join(command))
            return 0
        env = dashboard_environment(ip=args.ip, temp_root=temp)
        if token:  # a file in our 0700 temp folder, not the command line (``ps`` shows that to every local user)
            token_file = temp / "token"
            token_file.write_text(token)
            token_file.chmod(0o600)
            env["JUPYTER_TOKEN_FILE"] = str(token_file)
        for line in lines or [f"gradwidgets {args.command}: {notebook}"]:
            _say(line)
        for line in _startup_lines(args.ip, args.port, token, preset_hint):
            _say(line)
        return run_supervised(command, env)


def _startup_lines(ip: str, port: int, token: str, preset_hint: bool) -> list[str]:
    """What the CLI prints before Voila's log: the link to open (or share), warnings, one line on the noise."""
    shared = ip in WILDCARD_IPS
    host = socket.gethostname() if shared else (f"[{ip}]" if ":" in ip else ip)
    query = f"?token={token}" if token else ""
    link = f"http://{host}:{port}/{query}"
    lines = [f"Open {link} (Voila prints the final address if the port is taken). Ctrl-C stops."]
    if token:
        lines.append(f"Share this link with the class (the token is the password): {link}")
    if preset_hint:
        joiner = "&" if query else "?"
        lines.append(f"Preset a scenario in the URL: http://{host}:{port}/{query}{joiner}activation=sigmoid&depth=20")
    if not is_loopback(ip):
        lines.append(
            f"Warning: serving plain HTTP on {ip or 'every address'}: the traffic is not encrypted, so use a network "
            "you trust (or put HTTPS in front)"
            + ("." if token else "; anyone who can reach this machine can open it (--token adds a password).")
        )
    lines.append("(Two harmless notices are hidden: Voila's about an unsigned notebook, which runs only gradwidgets' "
                 "code, and each kernel's about plain TCP, which is on loopback with signed messages.)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gradwidgets`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "dashboard":
        return _dashboard(args)
    if args.command == "watch":
        return _watch(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
