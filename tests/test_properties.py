"""Property-based tests over the configuration space: every valid config builds, trains a step and yields
finite or explicitly non-finite stats; every invalid one is refused with a message naming the field."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradwidgets as gw
from gradwidgets.nets import RNN_ACTIVATIONS

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

mlp_configs = st.builds(
    gw.NetConfig,
    kind=st.just("mlp"),
    depth=st.integers(1, 12),
    width=st.integers(1, 24),
    activation=st.sampled_from(sorted(gw.ACTIVATIONS)),
    residual=st.booleans(),
    norm=st.sampled_from(gw.NORMS),
    norm_position=st.sampled_from(["pre", "post"]),
    init=st.sampled_from(["default", "xavier", "kaiming", "normal", "orthogonal"]),
    init_std=st.floats(1e-3, 2.0),
    init_gain=st.floats(0.1, 5.0),
    bias=st.booleans(),
)
rnn_configs = st.builds(
    gw.NetConfig,
    kind=st.just("rnn"),
    cell=st.sampled_from(gw.CELLS),
    activation=st.sampled_from(RNN_ACTIVATIONS),
    depth=st.integers(1, 2),
    width=st.integers(1, 12),
    seq_len=st.integers(1, 12),
    forget_bias=st.floats(-3, 3),
    norm=st.sampled_from(["none", "layer"]),
    init=st.sampled_from(["default", "xavier", "kaiming", "orthogonal"]),
)
transformer_configs = st.builds(
    gw.NetConfig,
    kind=st.just("transformer"),
    depth=st.integers(1, 3),
    heads=st.sampled_from([1, 2]),
    width=st.sampled_from([4, 8]),
    seq_len=st.integers(1, 6),
    activation=st.sampled_from(["relu", "gelu", "swiglu", "sigmoid"]),
    residual=st.booleans(),
    norm=st.sampled_from(["none", "layer"]),
    norm_position=st.sampled_from(["pre", "post"]),
)
session_options = st.fixed_dictionaries(
    {
        "optimizer": st.sampled_from(gw.OPTIMIZERS),
        "lr": st.floats(1e-4, 10.0),
        "batch_size": st.integers(2, 64),
        "seed": st.integers(0, 1000),
    }
)


def check_stats(stats: gw.GradientStats) -> None:
    assert len(stats.names) == len(stats.grad_norm) > 0
    for values in (stats.grad_norm, stats.grad_mean_abs, stats.grad_max_abs):
        assert values.dtype == np.float64
    finite = np.isfinite(stats.grad_norm)
    # Either all finite and non-negative, or the diagnosis calls it out.
    assert (stats.grad_norm[finite] >= 0).all()
    d = gw.diagnose(stats)
    assert d.kind in gw.DIAGNOSES
    if not finite.all() or not math.isfinite(stats.loss):
        assert d.kind == "nonfinite"


@FAST
@given(config=st.one_of(mlp_configs, rnn_configs, transformer_configs), options=session_options)
def test_every_valid_config_trains_a_step(config, options):
    session = gw.TrainingSession(config, n_samples=64, **options)
    check_stats(session.step(2))


invalid_fields = st.sampled_from(
    [
        ("depth", st.one_of(st.integers(max_value=0), st.integers(min_value=201), st.floats(), st.text())),
        ("width", st.one_of(st.integers(max_value=0), st.integers(min_value=4097), st.none())),
        ("activation", st.text().filter(lambda s: s not in gw.ACTIVATIONS)),
        ("norm", st.text().filter(lambda s: s not in gw.NORMS)),
        ("init", st.text().filter(lambda s: s not in gw.INITS)),
        ("kind", st.text().filter(lambda s: s not in gw.KINDS)),
        ("cell", st.text().filter(lambda s: s not in gw.CELLS)),
        ("seq_len", st.one_of(st.integers(max_value=0), st.integers(min_value=501))),
        ("init_gain", st.one_of(st.floats(max_value=0), st.just(float("nan")), st.just(float("inf")))),
    ]
)


@FAST
@given(data=st.data(), choice=invalid_fields)
def test_every_invalid_config_is_refused_by_name(data, choice):
    field, values = choice
    value = data.draw(values)
    with pytest.raises(ValueError, match=field):
        gw.NetConfig(**{field: value})


@FAST
@given(
    field_value=st.one_of(
        st.tuples(st.just("lr"), st.one_of(st.floats(max_value=0), st.just(float("nan")), st.just(float("inf")))),
        st.tuples(st.just("batch_size"), st.one_of(st.integers(max_value=0), st.floats(), st.text())),
        st.tuples(st.just("optimizer"), st.text().filter(lambda s: s not in gw.OPTIMIZERS)),
        st.tuples(st.just("dataset"), st.text().filter(lambda s: s not in gw.DATASETS)),
        st.tuples(st.just("seed"), st.integers(max_value=-1)),
    )
)
def test_every_invalid_session_option_is_refused_and_changes_nothing(field_value):
    field, value = field_value
    with pytest.raises(ValueError, match=field):
        gw.TrainingSession(depth=2, **{field: value})
    session = gw.TrainingSession(depth=2, width=4)
    before = session.describe()
    with pytest.raises(ValueError, match=field):
        session.reconfigure(**{field: value})
    assert session.describe() == before
