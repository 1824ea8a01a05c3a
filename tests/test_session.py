import math
import threading

import numpy as np
import pytest
import torch

import gradwidgets as gw


def test_same_seed_same_numbers():
    a = gw.TrainingSession(activation="tanh", depth=4, seed=3).step(20)
    b = gw.TrainingSession(activation="tanh", depth=4, seed=3).step(20)
    c = gw.TrainingSession(activation="tanh", depth=4, seed=4).step(20)
    np.testing.assert_array_equal(a.grad_norm, b.grad_norm)
    assert a.loss == b.loss and a.loss != c.loss


def test_step_returns_the_stats_of_the_last_step_and_counts():
    s = gw.TrainingSession(depth=3)
    stats = s.step(5)
    assert s.steps == 5 and stats.step == 5 and s.last_stats is stats
    assert len(s.history) == 5


def test_session_trains_the_spiral_with_a_healthy_net():
    s = gw.TrainingSession(activation="relu", init="kaiming", depth=4, width=64, optimizer="adam", lr=0.01)
    first = s.evaluate()["test_loss"]
    s.step(300)
    result = s.evaluate()
    assert result["test_loss"] < 0.5 * first
    assert result["test_accuracy"] > 0.85


def test_session_matches_a_plain_pytorch_loop():
    cfg = gw.NetConfig(depth=3, width=16, activation="tanh")
    session = gw.TrainingSession(cfg, lr=0.2, batch_size=32, seed=5)
    data = session.data
    torch.manual_seed(5)
    model = gw.build_model(cfg, data.in_features, data.out_features)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    gen = torch.Generator().manual_seed(6)
    for _ in range(3):
        index = torch.randint(len(data.x_train), (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(data.x_train[index]), data.y_train[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
        stats = session.step()
        assert stats.loss == pytest.approx(loss.item(), rel=1e-6)
    for ours, theirs in zip(session.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs)


def test_reconfigure_structural_rebuilds_and_light_changes_do_not():
    s = gw.TrainingSession(depth=3, lr=0.1)
    s.step(5)
    model = s.model
    assert s.reconfigure(lr=0.01) == {"settings"}
    assert s.model is model and s.optimizer_instance.param_groups[0]["lr"] == 0.01 and s.steps == 5
    assert s.reconfigure(optimizer="adam") == {"optimizer"}
    assert isinstance(s.optimizer_instance, torch.optim.Adam) and s.model is model
    assert s.reconfigure(activation="sigmoid", depth=5) == {"model"}
    assert s.model is not model and s.config.activation == "sigmoid" and s.config.depth == 5
    assert s.steps == 0 and len(s.history) == 0
    assert s.reconfigure(lr=0.01) == set()


def test_reconfigure_validates_everything_before_changing_anything():
    s = gw.TrainingSession(depth=3, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        s.reconfigure(activation="sigmoid", lr=float("nan"))
    with pytest.raises(ValueError, match="unknown field"):
        s.reconfigure(colour="red")
    with pytest.raises(ValueError, match="sequence task"):
        s.reconfigure(dataset="adding")
    assert s.config.activation == "relu" and s.settings.lr == 0.1


def test_switching_kind_picks_a_matching_dataset():
    s = gw.TrainingSession(depth=3)
    s.reconfigure(kind="rnn", activation="tanh", seq_len=10, width=16)
    assert s.settings.dataset == "adding"
    stats = s.step()
    assert stats.time_grad_norm is not None and len(stats.time_grad_norm) == 10


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"lr": 0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"dataset": "cifar"}, "dataset must be one of"),
        ({"seed": -1}, "seed"),
        ({"freeze": -1}, "freeze"),
        ({"clip": 0.0}, "clip"),
        ({"depth": 0}, "depth"),
        ({"colour": "red"}, "unknown option"),
        ({"config": "mlp"}, "config must be a NetConfig"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        gw.TrainingSession(**kwargs)


def test_reset_restarts_from_the_seed():
    s = gw.TrainingSession(depth=3, seed=1)
    first = s.step().loss
    s.step(10)
    s.reset()
    assert s.steps == 0 and len(s.history) == 0
    assert s.step().loss == first


def test_optimizers_all_train():
    for optimizer, lr in (("sgd", 0.1), ("momentum", 0.05), ("adam", 0.01)):
        s = gw.TrainingSession(depth=3, optimizer=optimizer, lr=lr, activation="relu", init="kaiming")
        before = s.evaluate()["test_loss"]
        s.step(100)
        assert s.evaluate()["test_loss"] < before, optimizer


def test_freeze_keeps_the_first_blocks_still_and_reports_them_frozen():
    s = gw.TrainingSession(depth=5, freeze=2, activation="relu", init="kaiming")
    before = [p.detach().clone() for p in s.model.blocks[0].parameters()]
    stats = s.step(10)
    after = list(s.model.blocks[0].parameters())
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b, a)
    frozen = {n for n, f in zip(stats.names, stats.frozen, strict=True) if f}
    assert frozen == {"blocks.0.layer", "blocks.1.layer"}
    assert gw.diagnose(stats).kind == "frozen"


def test_clip_bounds_the_gradient():
    s = gw.TrainingSession(depth=20, activation="relu", init="kaiming", init_gain=3.0, clip=1.0)
    stats = s.step()
    assert np.sqrt(np.sum(stats.grad_norm**2)) <= 1.0 + 1e-5


def test_divergence_is_flagged():
    s = gw.TrainingSession(depth=10, activation="relu", init="kaiming", init_gain=2.0, lr=1e3)
    s.step(20)
    assert s.diverged
    assert gw.diagnose(s.last_stats).kind in ("nonfinite", "exploding")
    s.reset()
    assert not s.diverged


def test_reconfigure_from_another_thread_lands_between_steps():
    s = gw.TrainingSession(depth=4, width=16)
    errors: list[BaseException] = []
    stop = threading.Event()

    def train():
        try:
            while not stop.is_set():
                stats = s.step()
                assert len(stats.names) == len(s.history.names)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    try:
        for depth in (2, 6, 3, 5) * 5:
            s.reconfigure(depth=depth, activation="tanh" if depth % 2 else "relu")
    finally:
        stop.set()
        thread.join(10)
    assert not errors and not thread.is_alive()
    assert s.config.depth == 5 and s.config.activation == "tanh"
    assert len(s.model.blocks) == 5


def test_describe_is_flat_and_complete():
    d = gw.TrainingSession(depth=3).describe()
    assert d["depth"] == 3 and d["dataset"] == "spiral" and d["lr"] == 0.1 and d["optimizer"] == "sgd"


@pytest.mark.parametrize(
    "fields", [dict(activation="sigmoid", depth=12), dict(activation="tanh", depth=4, norm="batch")]
)
def test_peek_reads_the_gradients_at_init_without_training(fields):
    """The at-init reading: one forward/backward on the batch step 1 will use, nothing changed, checked against
    plain torch.autograd on a copy of the model."""
    import copy

    session = gw.TrainingSession(**fields, width=32)
    weights = [p.detach().clone() for p in session.model.parameters()]
    buffers = [b.clone() for b in session.model.buffers()]
    twin = copy.deepcopy(session.model)
    generator = torch.Generator()
    generator.set_state(session._generator.get_state())
    index = torch.randint(len(session.data.x_train), (session.batch_size,), generator=generator)

    stats = session.peek()

    assert stats.step == 0 and session.steps == 0 and len(session.history) == 0 and session.last_stats is None
    assert all(torch.equal(a, b) for a, b in zip(weights, session.model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(buffers, session.model.buffers(), strict=True))
    assert all(p.grad is None for p in session.model.parameters())
    twin.train()
    loss = torch.nn.functional.cross_entropy(twin(session.data.x_train[index]), session.data.y_train[index])
    loss.backward()
    expected = [
        math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in twin.get_submodule(name).parameters(recurse=False)))
        for name in stats.names
    ]
    np.testing.assert_allclose(stats.grad_norm, expected, rtol=1e-5)
    np.testing.assert_allclose(session.step().grad_norm, stats.grad_norm, rtol=1e-6)  # step 1: the same batch


def test_the_session_numbers_its_runs_and_says_why_one_restarted():
    s = gw.TrainingSession(depth=3)
    assert (s.run_id, s.restart_reason) == (1, None)
    s.step(2)
    assert s.reconfigure(lr=0.05) == {"settings"} and (s.run_id, s.restart_reason) == (1, None)
    assert s.reconfigure(width=16, activation="tanh") == {"model"}
    assert (s.run_id, s.restart_reason, s.steps) == (2, "activation and width changed", 0)
    s.reconfigure(optimizer="adam")  # a new optimizer, same run
    assert s.run_id == 2
    s.reset()
    assert (s.run_id, s.restart_reason) == (3, "reset")
    with pytest.raises(ValueError, match="depth"):
        s.reconfigure(depth=0)
    assert (s.run_id, s.restart_reason) == (3, "reset"), "a refused change starts no run"
