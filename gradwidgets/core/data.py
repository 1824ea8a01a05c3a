"""Datasets, all generated on the spot (or shipped inside scikit-learn): nothing is downloaded.

Two-dimensional classification sets make gradients easy to reason about; ``digits`` is scikit-learn's bundled
8x8 digits; ``adding`` (Hochreiter & Schmidhuber 1997) and ``recall`` are sequence tasks whose difficulty grows
with ``seq_len``, for recurrent and transformer nets. Same name and seed, same tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn import datasets as skdatasets

from ..validation import check_limit

__all__ = ["DATASETS", "SEQUENCE_DATASETS", "Dataset", "make_dataset"]

TABULAR_DATASETS = ("spiral", "moons", "circles", "xor", "gaussian", "digits")
SEQUENCE_DATASETS = ("adding", "recall")
DATASETS = TABULAR_DATASETS + SEQUENCE_DATASETS
RECALL_TOKENS = 8

DEFAULT_NOISE = {
    "spiral": 0.2,
    "moons": 0.15,
    "circles": 0.08,
    "xor": 0.1,
    "gaussian": 1.0,
    "digits": 0.0,
    "adding": 0.0,
    "recall": 0.0,
}


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors plus what a model needs to know about them.

    Tabular inputs are ``[n, features]``; sequence inputs ``[n, seq_len, features]``. Classification targets
    are class indices (``long``), regression targets ``[n, 1]`` floats.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    in_features: int
    out_features: int
    is_sequence: bool


def make_dataset(
    name: str = "spiral",
    n_samples: int = 1024,
    noise: float | None = None,
    seed: int = 0,
    test_fraction: float = 0.25,
    seq_len: int = 20,
) -> Dataset:
    """Generate dataset ``name``. ``noise`` defaults to a value that keeps the task learnable."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}")
    n_samples = check_limit("n_samples", n_samples)
    if noise is None:
        noise = DEFAULT_NOISE[name]
    noise = check_limit("noise", noise)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(test_fraction, (int, float)) or not 0.05 <= test_fraction <= 0.9:
        raise ValueError(f"test_fraction must be in [0.05, 0.9], got {test_fraction!r}")
    seq_len = check_limit("seq_len", seq_len)

    rng = np.random.default_rng(seed)
    task, is_sequence = "classification", False
    if name == "spiral":
        x, y = _spiral(n_samples, noise, rng)
    elif name == "moons":
        x, y = skdatasets.make_moons(n_samples, noise=noise, random_state=seed)
    elif name == "circles":
        x, y = skdatasets.make_circles(n_samples, noise=noise, factor=0.5, random_state=seed)
    elif name == "xor":
        x = rng.uniform(-1, 1, size=(n_samples, 2))
        y = (np.sign(x[:, 0]) * np.sign(x[:, 1]) > 0).astype(np.int64)
        x = x + rng.normal(0, noise, size=x.shape)
    elif name == "gaussian":
        centers = [(-1.5, -1.5), (1.5, 1.5)]
        x, y = skdatasets.make_blobs(n_samples, centers=centers, cluster_std=noise, random_state=seed)
    elif name == "digits":
        bunch = skdatasets.load_digits()
        order = rng.permutation(len(bunch.target))[:n_samples]
        x, y = bunch.data[order] / 16.0, bunch.target[order]
    elif name == "adding":
        x, y = _adding(n_samples, seq_len, rng)
        task, is_sequence = "regression", True
    else:
        x, y = _recall(n_samples, seq_len, rng)
        is_sequence = True

    x = np.asarray(x, dtype=np.float32)
    order = rng.permutation(len(x))
    x, y = x[order], np.asarray(y)[order]
    n_test = max(1, int(round(len(x) * test_fraction)))
    x_train, x_test, y_train, y_test = x[n_test:], x[:n_test], y[n_test:], y[:n_test]
    if not is_sequence:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    to_target: Callable[[Any], torch.Tensor]
    if task == "regression":
        to_target = lambda a: torch.tensor(np.asarray(a, np.float32).reshape(-1, 1))  # noqa: E731
        out_features = 1
    else:
        to_target = lambda a: torch.tensor(np.asarray(a, np.int64))  # noqa: E731
        out_features = int(y.max()) + 1 if name != "recall" else RECALL_TOKENS
    return Dataset(
        name=name,
        x_train=torch.tensor(np.ascontiguousarray(x_train)),
        y_train=to_target(y_train),
        x_test=torch.tensor(np.ascontiguousarray(x_test)),
        y_test=to_target(y_test),
        task=task,
        in_features=int(x.shape[-1]),
        out_features=out_features,
        is_sequence=is_sequence,
    )


def _spiral(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals, 1.75 turns each: needs a few layers of nonlinearity to separate."""
    per_class = n // 2
    t = np.sqrt(rng.uniform(0, 1, size=per_class)) * 1.75 * 2 * math.pi
    arms = []
    for label, phase in ((0, 0.0), (1, math.pi)):
        radius = t / (1.75 * 2 * math.pi) * 2
        xy = np.stack([radius * np.cos(t + phase), radius * np.sin(t + phase)], axis=1)
        arms.append((xy + rng.normal(0, noise * 0.5, size=xy.shape), np.full(per_class, label)))
    x = np.concatenate([a[0] for a in arms])
    y = np.concatenate([a[1] for a in arms])
    return x, y


def _adding(n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Channel 0: values in [0, 1); channel 1: two markers, one in each half. Target: the marked values' sum."""
    values = rng.uniform(0, 1, size=(n, seq_len))
    markers = np.zeros((n, seq_len))
    half = max(seq_len // 2, 1)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, seq_len, size=n) if seq_len > 1 else first
    markers[np.arange(n), first] = 1.0
    markers[np.arange(n), second] = 1.0
    target = (values * markers).sum(axis=1)
    return np.stack([values, markers], axis=2), target


def _recall(n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One-hot random tokens; the label is the first token, so the answer lies ``seq_len`` steps back."""
    tokens = rng.integers(0, RECALL_TOKENS, size=(n, seq_len))
    return np.eye(RECALL_TOKENS)[tokens], tokens[:, 0]
