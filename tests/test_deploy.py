"""The class deployment file (``deploy/jupyterhub/values.yaml``) parses and says what README promises:
one server per student on the dashboard, CPU and memory limits, one torch thread, kernel and server culling
by the stock engines (jupyter_server's kernel culler, jupyterhub-idle-culler)."""

from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "jupyterhub" / "values.yaml"
Z2JH_TOP_LEVEL = {
    "hub", "proxy", "singleuser", "cull", "scheduling", "prePuller", "ingress", "debug", "imagePullSecret",
}


def test_values_parse_and_use_only_known_top_level_keys() -> None:
    values = yaml.safe_load(VALUES.read_text())
    assert set(values) <= Z2JH_TOP_LEVEL, set(values) - Z2JH_TOP_LEVEL


def test_every_student_lands_on_the_dashboard_with_limits_and_one_torch_thread() -> None:
    user = yaml.safe_load(VALUES.read_text())["singleuser"]
    assert user["defaultUrl"] == "/voila/render/notebooks/dashboard.ipynb"
    assert (ROOT / "notebooks" / "dashboard.ipynb").is_file()
    assert 0 < user["cpu"]["guarantee"] <= user["cpu"]["limit"] <= 2
    assert user["memory"]["limit"].endswith("G") and user["memory"]["guarantee"].endswith("M")
    assert user["extraEnv"]["OMP_NUM_THREADS"] == "1"


def test_kernels_and_servers_are_culled_by_the_stock_engines() -> None:
    values = yaml.safe_load(VALUES.read_text())
    kernels = values["singleuser"]["extraFiles"]["jupyter_server_config"]["data"]["MappingKernelManager"]
    assert kernels["cull_idle_timeout"] > 0 and kernels["cull_connected"] is False
    assert values["cull"]["enabled"] is True and values["cull"]["timeout"] >= kernels["cull_idle_timeout"]
    # the app pauses itself well before either culler looks (its heartbeat allowance is 25 s)
    from gradwidgets.apps.lifecycle import FIRST_WATCH_TIMEOUT, WATCH_TIMEOUT

    assert max(WATCH_TIMEOUT, FIRST_WATCH_TIMEOUT) < kernels["cull_idle_timeout"]
