"""The validation module: checks return the checked value, refusals name the field and the allowed values, and
every limit the library enforces is the one in the table (so the help text and the errors agree)."""

import numpy as np
import pytest

import gradwidgets as gw
from gradwidgets.apps.wording import valid_values
from gradwidgets.runtime import Runner
from gradwidgets.validation import (
    LIMITS,
    WIDTH_CHOICES,
    check_bool,
    check_choice,
    check_integer,
    check_limit,
    check_number,
)


def test_checks_return_the_checked_value_as_a_python_number():
    assert check_integer("width", np.int64(64), 1, 4096) == 64 and type(check_integer("w", np.int64(3), 1, 9)) is int
    assert check_number("lr", 1, 0.0, 10.0, low_open=True) == 1.0
    assert type(check_number("lr", np.float32(0.5), 0.0, 1.0)) is float
    assert check_choice("norm", "layer", ("none", "layer")) == "layer"
    assert check_bool("residual", False) is False
    assert check_limit("clip", None, allow_none=True) is None


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda: check_integer("depth", 0, 1, 200), r"depth must be an integer in \[1, 200\], got 0"),
        (lambda: check_integer("depth", True, 0, 200), r"depth must be an integer in \[0, 200\], got True"),
        (lambda: check_integer("depth", 2.0, 1, 200), "depth must be an integer"),
        (lambda: check_number("lr", 0.0, 0.0, 1e4, low_open=True), r"lr must be a finite number in \(0, 10000\]"),
        (lambda: check_number("lr", float("nan"), 0.0, 1.0), "lr must be a finite number"),
        (lambda: check_number("lr", 10**400, 0.0, 1.0), "lr must be a finite number"),
        (lambda: check_number("lr", "0.1", 0.0, 1.0), "got '0.1'"),
        (lambda: check_number("noise", 11, 0.0, 10.0, allow_none=True), r"\[0, 10\] or None, got 11"),
        (lambda: check_choice("norm", "group", ("none", "layer")), r"norm must be one of \['none', 'layer'\]"),
        (lambda: check_choice("norm", np.zeros(2), ("none",)), "norm must be one of"),
        (lambda: check_choice("depth", True, (1, 2)), r"depth must be one of \[1, 2\], got True"),
        (lambda: check_bool("residual", 1), "residual must be True or False, got 1"),
        (lambda: check_limit("fps", 31), r"fps must be a finite number in \(0, 30\]"),
    ],
)
def test_refusals_name_the_field_and_the_allowed_values(check, message):
    with pytest.raises(ValueError, match=message):
        check()


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: gw.NetConfig(depth=v), "depth"),
        (lambda v: gw.NetConfig(width=v), "width"),
        (lambda v: gw.NetConfig(kind="rnn", seq_len=v), "seq_len"),
        (lambda v: gw.NetConfig(heads=v), "heads"),
        (lambda v: gw.core.session.SessionSettings(batch_size=v), "batch_size"),
        (lambda v: gw.core.session.SessionSettings(seed=v), "seed"),
        (lambda v: gw.core.session.SessionSettings(n_samples=v), "n_samples"),
        (lambda v: gw.core.session.SessionSettings(freeze=v), "freeze"),
        (lambda v: gw.History(v, ("a",)), "history_size"),
    ],
)
def test_the_library_enforces_exactly_the_integer_limits_of_the_table(make, name):
    limit = LIMITS[name]
    make(int(limit.low))
    make(int(limit.high)) if name not in ("history_size", "n_samples", "width", "depth") else None
    for outside in (int(limit.low) - 1, int(limit.high) + 1):
        with pytest.raises(ValueError, match=name):
            make(outside)


def test_the_runner_enforces_the_rate_limits_of_the_table():
    for name in ("fps", "max_steps_per_second"):
        high = LIMITS[name].high
        for bad in (0, -1, high * 1.01, float("inf"), True, None if name == "fps" else "fast"):
            with pytest.raises(ValueError, match=name):
                Runner(lambda: True, lambda: None, lambda frame: None, **{name: bad}).close()
    runner = Runner(lambda: True, lambda: None, lambda frame: None, fps=LIMITS["fps"].high, max_steps_per_second=None)
    try:
        assert runner.fps == 30.0 and runner.max_steps_per_second is None
        runner.max_steps_per_second = LIMITS["max_steps_per_second"].high
        assert runner.max_steps_per_second == 10_000.0
    finally:
        runner.close()


def test_valid_values_reads_the_table():
    text = valid_values()
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in text.splitlines()[1:]}
    assert rows["depth"].startswith(f"1 to {int(LIMITS['depth'].high)} ")
    assert rows["width"] == f"1 to {int(LIMITS['width'].high)} (slider: {', '.join(map(str, WIDTH_CHOICES))})"
    assert rows["lr"] == "a number in (0, 10000]" and rows["batch_size"] == "1 to 65536"
    assert rows["seed"] == "0 to 2**31-1"
    assert gw.Playground.__doc__.startswith(text) and text in gw.Compare.__doc__


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    config = gw.NetConfig(depth=np.int64(3), width=np.int32(8), init_gain=np.float32(2.0))
    assert (config.depth, config.width, config.init_gain) == (3, 8, 2.0)
    assert type(config.depth) is int and type(config.init_gain) is float
    assert gw.NetConfig(depth=np.int64(3)) == gw.NetConfig(depth=3)
