"""Distributions per layer (issue 22): histograms and update:data against plain PyTorch, the cadence, errors kept
out of the loop, the notebook widget and the Playground's section while it trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradwidgets as gw
from gradwidgets.core import distributions as dist
from gradwidgets.core.distributions import GRADIENT_EDGES, UPDATE_EDGES, DistributionProbe
from gradwidgets.testing import recording_comm, wait_until

WIDTH, LR = 24, 0.1


def tanh_mlp(seed: int = 0) -> nn.Sequential:
    """Karpathy's lecture net in small: Linear -> Tanh, three times, then a head."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    features = 10
    for _ in range(3):
        layers += [nn.Linear(features, WIDTH), nn.Tanh()]
        features = WIDTH
    layers.append(nn.Linear(WIDTH, 5))
    return nn.Sequential(*layers)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 10, generator=g) * 2, torch.randint(0, 5, (64,), generator=g)


def expected_log_counts(values: torch.Tensor, edges: np.ndarray) -> tuple[np.ndarray, int]:
    magnitude = values.detach().double().abs().reshape(-1).numpy()
    width = edges[1] - edges[0]
    logs = np.clip(np.log10(magnitude[magnitude > 0]), edges[0] + width / 2, edges[-1] - width / 2)
    return np.histogram(logs, bins=edges)[0].astype(np.float64), int((magnitude == 0).sum())


def test_histograms_and_update_data_match_plain_pytorch():
    """One SGD step measured by the probe, and the same step done by hand on a twin with ``retain_grad``:
    activation and gradient histograms, the update histogram and Karpathy's log10((lr*grad).std()/data.std())."""
    model = tanh_mlp()
    twin = tanh_mlp()  # the same weights, no hooks
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    probe = DistributionProbe(model, optimizer, every=1)
    assert probe.state_names == ("1", "3", "5") and probe.weight_names == ("0", "2", "4", "6")
    x, y = batch()

    h, states = x, []
    for module in twin:
        h = module(h)
        if isinstance(module, nn.Tanh):
            h.retain_grad()
            states.append(h)
    nn.functional.cross_entropy(h, y).backward()
    weights = [p for p in twin.parameters() if p.dim() == 2]
    expected_ratio = [float(((LR * p.grad).std() / p.data.std()).log10()) for p in weights]
    before = [p.detach().clone() for p in model.parameters() if p.dim() == 2]

    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    reading = probe.latest
    assert reading is not None and reading.step == 1 and probe.error is None

    acts = reading.activations
    for i, state in enumerate(states):
        values = state.detach().double().reshape(-1).numpy()
        counts, edges = np.histogram(values, bins=dist.ACTIVATION_BINS, range=(values.min(), values.max()))
        np.testing.assert_allclose(acts.edges[i], edges)
        np.testing.assert_array_equal(acts.counts[i], counts)
        assert acts.mean[i] == pytest.approx(values.mean()) and acts.std[i] == pytest.approx(values.std(ddof=1))
        counts, zeros = expected_log_counts(state.grad, GRADIENT_EDGES)
        np.testing.assert_array_equal(reading.gradients.counts[i], counts)
        assert reading.gradients.zeros[i] == zeros
        assert reading.gradients.counts[i].sum() + zeros == state.numel()
    assert np.all(acts.fractions().sum(axis=1) == pytest.approx(1.0))

    after = [p.detach() for p in model.parameters() if p.dim() == 2]
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        relative = (new.double() - old.double()) / old.double().std()
        counts, zeros = expected_log_counts(relative, UPDATE_EDGES)
        np.testing.assert_array_equal(reading.updates.counts[i], counts)
        assert reading.updates.zeros[i] == zeros
    # float32 weights: w_new - w_old equals -lr*grad up to the rounding of w (~1e-7 of w, ~1e-4 of the step)
    np.testing.assert_allclose(reading.update_data, expected_ratio, atol=1e-3)
    assert np.all((reading.update_data > -4) & (reading.update_data < 0)), reading.update_data
    probe.remove()


def test_adam_update_data_is_the_step_taken_not_lr_times_grad():
    """Adam's first step moves every entry by about lr, whatever the gradient: update:data reads
    log10(lr / std(W)), which lr*grad would miss by the gradient's size."""
    model = tanh_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe = DistributionProbe(model, optimizer, every=1)
    x, y = batch()
    before = [p.detach().clone() for p in model.parameters() if p.dim() == 2]
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    steps = [
        (p.detach() - old).std() / old.std()
        for p, old in zip([p for p in model.parameters() if p.dim() == 2], before, strict=True)
    ]
    np.testing.assert_allclose(probe.latest.update_data, np.log10([float(s) for s in steps]), atol=1e-6)
    grads = [
        float((1e-3 * p.grad).std() / old.std())
        for p, old in zip([p for p in model.parameters() if p.dim() == 2], before, strict=True)
    ]
    assert np.all(np.abs(probe.latest.update_data - np.log10(grads)) > 0.5), "Adam is not lr*grad"


def test_measures_only_at_the_cadence_and_keeps_the_series():
    model = tanh_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    probe = DistributionProbe(model, optimizer, every=5, history_size=3)
    x, y = batch()
    seen = []
    for _ in range(1, 13):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        seen.append(probe.latest.step)
        with torch.no_grad():
            model(x)  # an evaluation pass: never measured
    assert seen == [1, 1, 1, 1, 5, 5, 5, 5, 5, 10, 10, 10]
    series = probe.series()
    assert series.steps.tolist() == [1, 5, 10]  # history_size=3 keeps the last three
    assert series.values.shape == (3, 4) and np.isfinite(series.values).all()
    np.testing.assert_array_equal(series.values[-1], probe.latest.update_data)
    probe.remove()
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert probe.steps == 12 and probe.latest.step == 10, "removed: no hook fires"


def test_first_step_counts_on_from_the_run():
    model = tanh_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    probe = DistributionProbe(model, optimizer, every=20, first_step=37)
    x, y = batch()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert probe.series().steps.tolist() == [38, 40]


def test_a_failing_measurement_never_reaches_the_loop(monkeypatch, caplog):
    model = tanh_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    probe = DistributionProbe(model, optimizer, every=1)

    def broken(*args, **kwargs):
        raise RuntimeError("histogram broke")

    monkeypatch.setattr(dist, "histogram_linear", broken)
    x, y = batch()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert isinstance(probe.error, RuntimeError) and probe.steps == 3
    assert probe.latest.activations is None, "the failed part is left out, not half-measured"
    assert probe.latest.gradients.counts.sum() > 0 and probe.latest.updates is not None, "the others still measure"
    assert np.isfinite(probe.latest.update_data).all() and probe.series().steps.tolist() == [1, 2, 3]
    assert sum("measuring the distributions" in r.message for r in caplog.records) == 1, "logged once"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"model": "net"}, "model"), ({"optimizer": None}, "optimizer"), ({"every": 0}, "every")],
)
def test_invalid_arguments_name_the_field(kwargs, field):
    model = tanh_mlp()
    arguments = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=LR), **kwargs}
    with pytest.raises(ValueError, match=f"^{field} must"):
        DistributionProbe(**arguments)


def test_project_nets_rows_are_hidden_layers_and_rnn_has_weights_only():
    session = gw.TrainingSession(gw.NetConfig(activation="sigmoid", depth=4, width=16), batch_size=32, seed=0)
    probe = DistributionProbe(session.model, session.optimizer_instance, every=1)
    session.step()
    reading = probe.latest
    assert reading.activations.names == ("input", "blocks.0", "blocks.1", "blocks.2", "blocks.3")
    assert reading.activations.edges[:, 0].min() >= 0 and reading.activations.edges[:, -1].max() <= 1  # sigmoid
    assert reading.updates.names[-1] == "head"
    rnn = gw.TrainingSession(gw.NetConfig(kind="rnn", cell="lstm", seq_len=10, width=8), batch_size=16)
    probe = DistributionProbe(rnn.model, rnn.optimizer_instance, every=1)
    rnn.step()
    assert probe.latest.activations is None and probe.latest.updates is not None
    assert np.isfinite(probe.latest.update_data).all()


def test_vanishing_net_gradient_histograms_shift_left_layer_by_layer():
    """The picture the lecture draws: in a deep sigmoid net the early layers' |dL/dh| sit orders of magnitude
    below the late ones' (median bin of the log10 histogram)."""
    session = gw.TrainingSession(gw.NetConfig(activation="sigmoid", depth=10, width=32), batch_size=64, seed=0)
    probe = DistributionProbe(session.model, session.optimizer_instance, every=1)
    session.step()
    grads = probe.latest.gradients
    centres = grads.centres()[0]
    median = [centres[np.searchsorted(np.cumsum(row), row.sum() / 2)] for row in grads.counts]
    assert median[-1] - median[0] > 4, median  # > 4 decades from the last hidden layer back to the first
    assert np.all(np.diff(median) >= 0), median


def test_the_notebook_widget_draws_finite_data():
    with recording_comm():
        model = tanh_mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        widget = gw.Distributions(model, optimizer, every=2)
        x, y = batch()
        try:
            for _ in range(9):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()
            view = widget.view
            assert wait_until(
                lambda: (
                    view.update_data.figure.title.startswith("Update:data")
                    and view.update_data.lines.x.shape == (4, 5)
                    and "step 8" in view.activations.figure.title
                ),
                timeout=60,
            )
            for chart in (view.activations, view.gradients, view.updates):
                assert chart.lines.y.shape[0] in (3, 4) and np.isfinite(chart.lines.y).all()
                assert chart.lines.y.max() > 0 and len(chart.lines.colors) == chart.lines.y.shape[0]
            assert np.isfinite(view.update_data.lines.y).all()
            assert view.update_data.reference.y.tolist() == [-3.0, -3.0]
            assert view.updates.reference.x.tolist() == [-3.0, -3.0]
            low, high = view.update_data.scale_y.min, view.update_data.scale_y.max
            assert low <= view.update_data.lines.y.min() and view.update_data.lines.y.max() <= high
            assert "weights" in view.weight_legend.value and ">6<" in view.weight_legend.value
            assert "Measured at step 8" in widget.status.value
        finally:
            widget.close()
        assert not model[1]._forward_hooks and not optimizer._optimizer_step_post_hooks, "close() removes hooks"


def test_playground_section_while_training():
    with recording_comm():
        pg = gw.Playground(activation="tanh", depth=5, width=16, batch_size=32, n_samples=256)
        try:
            section = pg.distributions
            assert section.view.layout.display == "none" and section.probe is None
            section.toggle.value = True
            pg.play()
            assert wait_until(lambda: section.probe is not None and len(section.probe.series().steps) >= 3, 60)
            assert wait_until(lambda: section.view.update_data.lines.x.shape[-1] >= 3, 60)
            assert section.view.layout.display is None
            assert np.isfinite(section.view.update_data.lines.y).all()
            assert np.isfinite(section.view.activations.lines.y).all()
            assert section.view.activations.lines.y.shape[0] == 6  # input + 5 hidden layers
            pg.activation = "relu"  # a new model: the probe follows it
            assert wait_until(lambda: section.probe is not None and section.probe.model is pg.session.model, 60)
            assert wait_until(lambda: section.probe.latest is not None, 60)
            pg.pause()
            assert wait_until(lambda: f"step {section.probe.latest.step}" in section.view.activations.figure.title, 60)
            assert section.probe.latest.step <= pg.session.steps
            assert "no hidden state" not in section.view.activations.figure.title
            section.toggle.value = False
            pg.step()
            assert wait_until(lambda: section.probe is None and section.view.layout.display == "none", 60)
            section.toggle.value = True
            pg.step()
            assert wait_until(lambda: section.probe is not None, 60)
            model, optimizer = section.probe.model, section.probe.optimizer
        finally:
            pg.close()
        assert section.probe is None and not optimizer._optimizer_step_post_hooks, "close() removes the hooks"
        assert not any(m._forward_hooks for m in model.modules())


def test_playground_section_on_a_recurrent_net_says_why_the_state_charts_are_empty():
    with recording_comm():
        pg = gw.Playground(kind="rnn", cell="lstm", seq_len=10, width=8, batch_size=16, n_samples=64)
        try:
            section = pg.distributions
            section.toggle.value = True
            pg.step(3)
            # the title and the lines are set one after the other by the render thread: wait for both
            assert wait_until(lambda: "Updates at step" in section.view.updates.figure.title
                              and section.view.update_data.lines.y.shape[0] == 3, 60)
            assert section.view.activations.figure.title == "Activations: no hidden state to hook in this net"
            assert np.isfinite(section.view.updates.lines.y).all()
        finally:
            pg.close()


def test_view_summaries_stay_short_for_deep_nets():
    from gradwidgets.widgets.distributions import DistributionsView, layer_colors

    with recording_comm():
        view = DistributionsView()
        names = [f"blocks.{i}" for i in range(40)]
        centres = np.tile(np.linspace(0, 1, 41), (40, 1))
        fractions = np.full((40, 41), 1 / 41)
        view.show_activations(names, centres, fractions, np.full(40, 0.5), np.full(40, 0.1), step=7)
        assert view.summary.value.count("mean") == 12 and "… 28 more …" in view.summary.value
        assert "blocks.0<" in view.state_legend.value and "blocks.39<" in view.state_legend.value
        assert "… 38 more …" in view.state_legend.value
        assert view.activations.lines.y.shape == (40, 41) and view.activations.figure.title == "Activations at step 7"
    colors = layer_colors(40)
    assert colors[0] == "#1f77b4" and colors[-1] == "#d62728" and len(set(colors)) == 40
