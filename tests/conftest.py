import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

# Tests run on a 2-core machine next to other work: one intra-op thread keeps timings sane and results stable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from _servers import chromium_path  # noqa: E402

torch.set_num_threads(1)

NO_CHROMIUM = "no Chromium found (/usr/bin/chromium): apt-get install chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``browser`` skip, saying why, where no Chromium is installed (CI installs Debian's); their
    modules are still imported, so a missing playwright (part of the test extra) is an error, not a skip."""
    if chromium_path() is not None:
        return
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.skip(reason=NO_CHROMIUM))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (tests/_browser.py) for all the tests of a module; each test opens its own pages."""
    from _browser import headless_chromium

    with headless_chromium() as chromium:
        yield chromium
