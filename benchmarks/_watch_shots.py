"""What the ``gradwidgets watch`` screenshot scripts share: a watch server for one run file and theme, stopped by its
process group id also on failure, and the main loop over the light and dark themes."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _servers import Server, free_port, server_environment  # noqa: E402 - the test suite's helpers, found above


@contextmanager
def watch_server(run: Path, theme: str, logs: Path) -> Iterator[Server]:
    """``gradwidgets watch RUN --theme THEME`` listening on a free port; stopped on leaving, also on failure."""
    port = free_port()
    command = [sys.executable, "-m", "gradwidgets", "watch", str(run), "--no-browser", "--port", str(port)]
    command += ["--theme", theme]
    server = Server(command, port, logs / f"watch-{theme}.log", env=server_environment({"PYTHONPATH": str(ROOT)}))
    try:
        server.wait_listening(timeout=120)
        yield server
    finally:
        server.stop()


def shoot_themes(
    description: str,
    stem: str,
    write_run: Callable[[Path], None],
    shoot: Callable[[Path, str, Path, Path], list[str]],
) -> int:
    """The scripts' main: write one run file, ``shoot(run, theme, png, logs)`` it in light and dark into
    ``--out``/``STEM-THEME.png``; prints each problem; 1 when there was one."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=str(ROOT / "docs"), help=f"folder for {stem}-light.png and {stem}-dark.png")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / f"{stem}.gwrun"
        write_run(run)
        for theme in ("light", "dark"):
            png = out / f"{stem}-{theme}.png"
            problems += shoot(run, theme, png, Path(folder))
            print(f"screenshot: {png}")
    for problem in problems:
        print("FAIL:", problem)
    return 1 if problems else 0
