"""The page ``gradwidgets watch PATH`` serves: a one-cell notebook, written to a temporary folder, that shows a
:class:`~gradwidgets.apps.run_viewer.RunViewer` on PATH.

The path goes into the cell as a Python string literal (``repr`` of an absolute path): nothing of it is executed.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WATCH_NOTEBOOK", "watch_notebook", "watch_notebook_path", "watch_source"]

WATCH_NOTEBOOK = "watch.ipynb"


def watch_source(paths: Sequence[Path]) -> str:
    """The notebook's only cell, for absolute ``paths``."""
    literal = repr([str(p) for p in paths]) if len(paths) > 1 else repr(str(paths[0]))
    return (
        "# gradwidgets watch: follows run files while a script writes them.\n"
        "from gradwidgets.apps.run_viewer import watch_app\n"
        "\n"
        f"page = watch_app({literal})\n"
        "page"
    )


def watch_notebook(paths: Sequence[Path]) -> Any:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(watch_source(paths))
    cell["id"] = "watch-app"
    notebook.cells = [cell]
    return notebook


@contextlib.contextmanager
def watch_notebook_path(paths: Sequence[Path]) -> Iterator[Path]:
    """The watch notebook in a temporary folder, removed when the server stops."""
    import nbformat

    folder = Path(tempfile.mkdtemp(prefix="gradwidgets-watch-"))
    try:
        path = folder / WATCH_NOTEBOOK
        nbformat.write(watch_notebook([Path(p).expanduser().resolve() for p in paths]), str(path))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
