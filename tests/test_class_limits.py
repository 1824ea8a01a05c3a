"""Widget caps = URL caps (issue 21, item 5): the page's own comm messages cannot take the Playground beyond what
a shared link may ask for. Each test sends what a front end sends (``set_state``, the comm's path into the kernel)
to a real Playground's inputs, then reads the session's net."""

from __future__ import annotations

import pytest
import torch

import gradwidgets as gw
from gradwidgets.dashboard.presets import PRESET_FIELDS, parse_query
from gradwidgets.nets.cost import CLASS_LIMITS, check_class_change
from gradwidgets.testing import recording_comm
from gradwidgets.validation import LIMITS, Limit

SMALL = dict(width=16, batch_size=32, n_samples=256)


@pytest.fixture
def playgrounds():
    made: list[gw.Playground] = []
    with recording_comm():

        def make(**kwargs) -> gw.Playground:
            pg = gw.Playground(**{**SMALL, **kwargs})
            made.append(pg)
            return pg

        yield make
        for pg in made:
            pg.close()


def choose(pg: gw.Playground, name: str, value) -> None:
    """Pick ``value`` in a dropdown as the page does: by its index."""
    box = pg.controls.inputs[name]
    box.set_state({"index": [v for _, v in box.options].index(value)})


def refused(pg: gw.Playground, name: str) -> bool:
    text = pg.controls.message.value
    return "Refused" in text and name in text


def test_a_slider_max_from_the_page_does_not_give_a_200_layer_net(playgrounds):
    pg = playgrounds(activation="sigmoid", depth=12)
    depth = pg.controls.inputs["depth"]
    depth.set_state({"max": 200})
    depth.set_state({"value": 200})
    assert pg.session.config.depth == 12
    assert sum(isinstance(m, torch.nn.Linear) for m in pg.session.model.modules()) == 14  # input layer, 12 hidden, head
    assert refused(pg, "depth") and "1 to 60" in pg.controls.message.value
    assert (depth.value, depth.max) == (12, 60)  # the page's range was put back too
    depth.set_state({"value": 60})  # the class's own maximum still applies
    assert pg.session.config.depth == 60 and pg.controls.message.value == ""


def test_a_learning_rate_slider_stretched_by_the_page_stops_at_the_links_limit(playgrounds):
    pg = playgrounds(activation="relu", depth=4)
    lr = pg.controls.inputs["lr"]
    lr.set_state({"max": 4})  # exponent: 1e4 is a valid lr for the library, not for a link (<= 1000)
    lr.set_state({"value": 1e4})
    assert pg.session.describe()["lr"] == pytest.approx(0.1)
    assert refused(pg, "lr")
    assert lr.max == 1


def test_width_and_batch_that_overflow_the_kernel_budget_are_refused(playgrounds):
    pg = playgrounds(kind="transformer", depth=6, width=64, batch_size=128)
    choose(pg, "width", 512)  # 6 blocks x 512 wide x 20 tokens at batch 128: ~1.5 GB
    assert pg.session.config.width == 64
    assert refused(pg, "width") and "MB" in pg.controls.message.value
    choose(pg, "batch_size", 1024)
    assert pg.session.describe()["batch_size"] == 128
    assert refused(pg, "batch_size")
    choose(pg, "batch_size", 64)  # within the budget: applies
    assert pg.session.describe()["batch_size"] == 64 and pg.controls.message.value == ""


def test_deep_net_from_code_may_move_back_towards_the_limit_never_further(playgrounds):
    pg = playgrounds(activation="relu", depth=80)  # code keeps the library's limits (<= 200)
    depth = pg.controls.inputs["depth"]
    assert depth.max == 80
    depth.set_state({"value": 70})
    assert pg.session.config.depth == 70
    depth.set_state({"max": 120})
    depth.set_state({"value": 100})
    assert pg.session.config.depth == 70 and refused(pg, "depth")
    pg.depth = 150  # from code: allowed
    assert pg.session.config.depth == 150


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [("depth", 60, 61), ("width", 512, 4096), ("seq_len", 200, 201), ("heads", 8, 16), ("batch_size", 1024, 2048),
     ("freeze", 60, 61), ("lr", 1000.0, 1e4)],
)
def test_a_control_reaches_what_a_link_reaches_and_no_further(name, inside, outside):
    """Fields without a Playground control yet (seq_len, heads, freeze) go through the same check when one is
    added; the link's range and the control's are one table."""
    current = {"kind": "mlp", "depth": 4, "width": 16, "seq_len": 20, "heads": 1, "batch_size": 8, "freeze": 0,
               "lr": 0.1, "optimizer": "sgd"}
    link = PRESET_FIELDS[name]
    assert (link.low, link.high) == (CLASS_LIMITS[name].low, CLASS_LIMITS[name].high) == (link.low, inside)
    check_class_change(current, {name: inside})
    with pytest.raises(ValueError, match=name):
        check_class_change(current, {name: outside})
    assert parse_query(f"{name}={outside}").problems


def test_a_control_cannot_push_a_net_over_the_kernel_budget():
    current = {"kind": "transformer", "depth": 6, "width": 64, "seq_len": 20, "heads": 4, "batch_size": 128,
               "optimizer": "sgd"}
    check_class_change(current, {"depth": 7})
    with pytest.raises(ValueError, match="MB"):
        check_class_change(current, {"seq_len": 200})
    with pytest.raises(ValueError, match="MB"):
        check_class_change(current, {"heads": 8, "batch_size": 512})


def test_the_class_ranges_are_the_library_table_s_class_view():
    """Every numeric link field is capped, by a range inside the library's (one table, no second copy to drift)."""
    numeric_link_fields = {name for name, field in PRESET_FIELDS.items() if field.kind in ("int", "float")}
    assert set(CLASS_LIMITS) == numeric_link_fields
    for name, limit in CLASS_LIMITS.items():
        library = LIMITS[name]
        assert library.low <= limit.low <= limit.high <= library.high, name
        assert (limit.integer, limit.low_open) == (library.integer, library.low_open), name
    assert (CLASS_LIMITS["depth"].high, LIMITS["depth"].high) == (60, 200)
    assert CLASS_LIMITS["seed"] == LIMITS["seed"].for_class() and CLASS_LIMITS["seed"].high == 2**31 - 1
    assert "momentum" not in CLASS_LIMITS  # no link sets it: the session's own check names the problem


def test_a_class_range_outside_the_library_s_is_refused():
    with pytest.raises(ValueError, match=r"inside the library's \[1, 200\], got \[1, 300\]"):
        Limit(1, 200, integer=True, class_high=300)
    with pytest.raises(ValueError, match="class range"):
        Limit(0.0, 10.0, class_low=-1.0)
