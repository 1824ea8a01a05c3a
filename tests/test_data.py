import numpy as np
import pytest
import torch

import gradwidgets as gw


@pytest.mark.parametrize("name", gw.DATASETS)
def test_same_seed_same_tensors_other_seed_other_tensors(name):
    a = gw.make_dataset(name, n_samples=200, seed=3)
    b = gw.make_dataset(name, n_samples=200, seed=3)
    c = gw.make_dataset(name, n_samples=200, seed=4)
    torch.testing.assert_close(a.x_train, b.x_train)
    torch.testing.assert_close(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", ["spiral", "moons", "circles", "xor", "gaussian"])
def test_two_dimensional_sets_are_balanced_standardized_and_split(name):
    data = gw.make_dataset(name, n_samples=400, seed=0, test_fraction=0.25)
    assert data.in_features == 2 and data.out_features == 2 and data.task == "classification"
    assert len(data.x_test) == 100 and len(data.x_train) == 300
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    np.testing.assert_allclose(data.x_train.mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(0, unbiased=False).numpy(), 1, atol=1e-4)
    counts = np.bincount(np.concatenate([data.y_train.numpy(), data.y_test.numpy()]))
    assert counts.min() >= 0.35 * 400


def test_digits_come_from_scikit_learn_without_download():
    data = gw.make_dataset("digits", n_samples=500)
    assert data.in_features == 64 and data.out_features == 10
    assert len(data.x_train) + len(data.x_test) == 500


def test_adding_problem_target_is_the_sum_of_the_two_marked_values():
    data = gw.make_dataset("adding", n_samples=64, seq_len=30, seed=1)
    assert data.is_sequence and data.task == "regression" and data.x_train.shape[1:] == (30, 2)
    values, markers = data.x_train[..., 0], data.x_train[..., 1]
    assert torch.all(markers.sum(1) == 2)
    first, second = markers[:, :15].argmax(1), markers[:, 15:].argmax(1) + 15
    assert torch.all(markers[torch.arange(len(markers)), first] == 1)
    assert torch.all(markers[torch.arange(len(markers)), second] == 1)
    torch.testing.assert_close((values * markers).sum(1, keepdim=True), data.y_train)


def test_recall_label_is_the_first_token():
    data = gw.make_dataset("recall", n_samples=64, seq_len=12)
    assert data.x_train.shape[1:] == (12, 8) and data.out_features == 8
    assert torch.equal(data.x_train[:, 0].argmax(1), data.y_train)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "mnist"}, "dataset must be one of"),
        ({"n_samples": 3}, "n_samples"),
        ({"noise": -1.0}, "noise"),
        ({"seed": -2}, "seed"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"seq_len": 0}, "seq_len"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        gw.make_dataset(**kwargs)
