"""Generated data, loss functions and outcome checks shared by the program families.

The outcome checks decide whether a program's label is *confirmed*, from what happened to the run (and to its
fixed twin), never from gradwidgets' readings. Each check returns ``(confirmed, detail)``; detail states the
numbers it compared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw

from .harness import RunResult

Check = Callable[[RunResult, Callable[[], RunResult]], tuple[bool, str]]
SEED = {"value": 0}
"""The benchmark's seed (``run.py --seed``): data order and content, and (through the harness) the model's init."""


def set_seed(seed: int) -> None:
    SEED["value"] = int(seed)


def _seed(seed: int | None) -> int:
    return SEED["value"] if seed is None else seed


# ------------------------------------------------------------------------------------------------------ data
def _sampler(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int) -> Any:
    """``batch_fn(i)``: the i-th of 4096 seeded random batches (the same draw for a program and its twin)."""
    order = torch.randint(0, len(x), (4096, batch), generator=torch.Generator().manual_seed(seed))

    def batch_fn(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[i % len(order)]
        return x[idx], y[idx]

    return batch_fn


def tabular(name: str = "spiral", batch: int = 64, seed: int | None = None, n: int = 1024) -> tuple[Any, Any, int, int]:
    """(batch_fn, loss_fn, in_features, classes) over a generated gradwidgets dataset."""
    seed = _seed(seed)
    data = gw.make_dataset(name, n_samples=n, seed=seed)
    x, y = data.x_train, data.y_train
    batch_fn = _sampler(x, y, batch, seed)

    return batch_fn, classify, data.in_features, data.out_features


def classify(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def sequences(name: str, seq_len: int, batch: int = 32, seed: int | None = None) -> tuple[Any, Any, int, int]:
    """Sequence data (``recall``: classify the first token; ``adding``: regression)."""
    seed = _seed(seed)
    data = gw.make_dataset(name, n_samples=1024, seq_len=seq_len, seed=seed)
    x, y = data.x_train, data.y_train
    batch_fn = _sampler(x, y, batch, seed)

    loss = classify if data.task == "classification" else regress
    return batch_fn, loss, data.in_features, data.out_features


def regress(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


VOCAB = 16


def token_batches(batch: int = 16, seq: int = 16, seed: int | None = None) -> Callable[[int], torch.Tensor]:
    """Token sequences with a learnable rule: each token is (3 * previous + 1) mod 16, the first at random."""
    gen = torch.Generator().manual_seed(_seed(seed))
    starts = torch.randint(0, VOCAB, (4096, batch), generator=gen)

    def batch_fn(i: int) -> torch.Tensor:
        rows = [starts[i % len(starts)]]
        for _ in range(seq - 1):
            rows.append((3 * rows[-1] + 1) % VOCAB)
        return torch.stack(rows, dim=1)

    return batch_fn


def images(batch: int = 8, size: int = 16, classes: int = 4, seed: int | None = None) -> Callable[[int], Any]:
    """Noise images whose class is the quadrant holding a bright patch (one channel per class mod 3)."""
    seed = _seed(seed)

    def batch_fn(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 100_003 + i)
        y = torch.randint(0, classes, (batch,), generator=g)
        x = torch.randn(batch, 3, size, size, generator=g) * 0.5
        half = size // 2
        for k in range(batch):
            c = int(y[k])
            r0, c0 = (c // 2) * half, (c % 2) * half
            x[k, c % 3, r0 : r0 + half, c0 : c0 + half] += 1.5
        return x, y

    return batch_fn


# ---------------------------------------------------------------------------------------------------- checks
def _fmt(v: float) -> str:
    return f"{v:.3g}" if math.isfinite(v) else str(v)


def learns(run: RunResult, frac: float) -> tuple[bool, str]:
    start, end = run.start(), run.end()
    ok = run.finite and end <= frac * start
    return ok, f"loss {_fmt(start)} -> {_fmt(end)} (learns: <= {frac} x start)"


def flat(run: RunResult, tol: float, window: int = 5) -> tuple[bool, str]:
    start, end = run.start(window), run.end(window)
    ok = run.finite and abs(end - start) <= tol * start
    return ok, f"loss {_fmt(start)} -> {_fmt(end)} (flat: within {tol:.0%})"


def diverged(run: RunResult) -> tuple[bool, str]:
    """The loss became inf/NaN, or ends above 10x its start (so the trained checkpoint is still diverged)."""
    ok = not run.finite or run.end() > 10 * run.start()
    return ok, f"loss {_fmt(run.start())} -> {_fmt(run.end())}, finite={run.finite} (diverged: inf/NaN or ends > 10x)"


def both(*parts: tuple[bool, str]) -> tuple[bool, str]:
    return all(p[0] for p in parts), "; ".join(("" if p[0] else "FAILED ") + p[1] for p in parts)


def healthy(frac: float = 0.8) -> Check:
    """It learns: the loss falls to ``frac`` of its start."""
    return lambda run, twin: learns(run, frac)


def stuck(run: RunResult, chance: float | None, tol: float = 0.05) -> tuple[bool, str]:
    """The loss ends within ``tol`` of its start, or of chance (``ln(classes)``), whichever is lower: it learns
    nothing beyond the class prior."""
    floor = min(run.start(), chance) if chance is not None else run.start()
    end = run.end()
    ok = run.finite and end >= (1 - tol) * floor
    where = f"start/chance {_fmt(floor)}" if chance is not None else f"start {_fmt(floor)}"
    return ok, f"loss {_fmt(run.start())} -> {_fmt(end)} (stuck: >= {1 - tol:.2f} x {where})"


def vanishing(chance: float | None = None, twin_frac: float = 0.8, lag: float | None = None) -> Check:
    """The loss stays at its start or chance while the fixed twin's falls below ``twin_frac`` of its start.
    With ``lag``: the run may learn a shallow part of the task (a bigram in T5's decoder), but ends at >= ``lag``
    x the twin's loss."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        other = twin()
        if lag is not None:
            behind = run.end() >= lag * other.end()
            part = (behind, f"loss {_fmt(run.start())} -> {_fmt(run.end())} (>= {lag:g}x twin's {_fmt(other.end())})")
            return both(part, _twin(learns(other, twin_frac)))
        return both(stuck(run, chance), _twin(learns(other, twin_frac)))

    return check


def _twin(part: tuple[bool, str]) -> tuple[bool, str]:
    return part[0], "twin " + part[1]


def exploding(growth: float = 30.0, twin_frac: float = 0.8, then: str = "stuck") -> Check:
    """Mechanism: the first read's largest weight gradient is >= ``growth`` x the fixed twin's (``then="stuck"``:
    the trained read's too); outcome: the run ends >= 2x the twin's loss while the twin learns. With
    ``then="recovers"`` the run learns anyway (its truth after training is healthy, e.g. deep BatchNorm)."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        other = twin()
        ours, theirs = max(run.init_grads, default=0.0), max(other.init_grads, default=0.0)
        grew = ours >= growth * theirs and math.isfinite(ours)
        mech = (grew, f"init max weight-gradient {_fmt(ours)} vs twin {_fmt(theirs)} (>= {growth:g}x)")
        if then == "recovers":
            return both(mech, learns(run, twin_frac))
        trained = run.checkpoints.get("trained")
        late = max((r["grad_norm"] for r in trained.layers), default=0.0) if trained else float("nan")
        still = (late >= growth * theirs, f"trained max weight-gradient {_fmt(late)} (>= {growth:g}x twin's init)")
        worse = (not run.finite) or run.end() >= 2 * other.end()
        return both(mech, still, (worse, f"loss {_fmt(run.start())} -> {_fmt(run.end())} (>= 2x twin's end)"),
                    _twin(learns(other, twin_frac)))

    return check


def diverging(twin_frac: float = 0.8) -> Check:
    """The loss becomes inf/NaN or grows > 10x; the twin (smaller learning rate) learns."""
    return lambda run, twin: both(diverged(run), _twin(learns(twin(), twin_frac)))


def dead(min_fraction: float = 0.9, learn_frac: float | None = None) -> Check:
    """>= ``min_fraction`` of the watched layer's units output 0 on the whole batch at both checkpoints."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        fractions = [run.dead_fraction.get(k, float("nan")) for k in ("init", "trained")]
        ok = all(f >= min_fraction for f in fractions)
        return ok, f"dead units of {run.setup.watch_layer}: init {fractions[0]:.2f}, trained {fractions[1]:.2f}"

    return check


def frozen(frac: float = 0.9) -> Check:
    """Some parameters have requires_grad=False by construction, and the trainable ones learn."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        params = list(run.setup.model.parameters())
        n_frozen = sum(1 for p in params if not p.requires_grad)
        return both((n_frozen > 0, f"{n_frozen}/{len(params)} parameters frozen by construction"), learns(run, frac))

    return check


def unused(frac: float = 0.9) -> Check:
    """Trainable parameters hold no gradient at both reads (the branch was skipped), and the rest learns."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        counts = [run.unused_at_read.get(k, 0) for k in ("init", "trained")]
        return both((min(counts) > 0, f"trainable parameters without .grad at the reads: {counts}"), learns(run, frac))

    return check


def no_gradient(frac: float = 0.9) -> Check:
    """At both reads no parameter holds a nonzero gradient, while the training itself works."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        counts = [run.grads_at_read.get(k, -1) for k in ("init", "trained")]
        return both((counts == [0, 0], f"parameters with a nonzero gradient at the reads: {counts}"), learns(run, frac))

    return check


def amp_unscaled(frac: float = 0.9) -> Check:
    """The GradScaler's scale (>= 1e3) is in the gradients that were read, and the training itself works."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        return both((run.scale >= 1e3, f"GradScaler scale at the reads {run.scale:g}"), learns(run, frac))

    return check


def micro_batch(frac: float = 0.95) -> Check:
    """Reads between micro-batches by construction (accumulation, no step between), and the training works."""
    return lambda run, twin: both((True, "read after each micro-batch of 4 by construction"), learns(run, frac))


def eps_limited(chance: float | None = None, twin_frac: float = 0.85, eps: float = 1e-8) -> Check:
    """Mechanism: the first weight's gradient RMS at init is below Adam's eps; outcome: the run stays flat while
    the twin with eps=1e-30 learns."""

    def check(run: RunResult, twin: Callable[[], RunResult]) -> tuple[bool, str]:
        first = run.checkpoints["init"].layers[0] if run.checkpoints.get("init") else None
        rms = first["grad_rms"] if first else float("nan")
        return both((rms < eps, f"first-layer gradient RMS {_fmt(rms)} < eps {eps:g}"), stuck(run, chance),
                    _twin(learns(twin(), twin_frac)))

    return check


def lr_too_small(tol: float = 0.05, twin_frac: float = 0.8) -> Check:
    """The loss moves less than ``tol`` while the twin (a usual learning rate) learns."""
    return lambda run, twin: both(flat(run, tol, window=10), _twin(learns(twin(), twin_frac)))


def adam(model: nn.Module, lr: float = 1e-3, eps: float = 1e-8) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, eps=eps)


def sgd(model: nn.Module, lr: float = 0.1, momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum)



# ------------------------------------------------------------------------------------------- program builder
def data_source(spec: str, batch: int) -> tuple[Any, Any, int, int]:
    """``"moons"`` (tabular), ``"recall:8"`` / ``"adding:10"`` (sequences), ``"images"`` -> batch, loss, in, out."""
    if spec == "images":
        return images(batch=batch), classify, 3, 4
    if ":" in spec:
        name, seq = spec.split(":")
        return sequences(name, int(seq), batch=batch)
    return tabular(spec, batch=batch)


def program(
    name: str,
    family: str,
    make_model: Callable[[bool, int, int], nn.Module],
    labels: tuple[str, str],
    check: Check,
    *,
    data: str = "moons",
    batch: int = 64,
    optimizer: str = "adam",
    lr: float = 1e-2,
    eps: float = 1e-8,
    momentum: float = 0.9,
    fixed: dict[str, Any] | None = None,
    steps: int = 40,
    mode: str = "standard",
    case: int | None = None,
    clip: float | None = None,
    watch_layer: str | None = None,
    set_to_none: bool = True,
    loss: Any = None,
    batches: Any = None,
    requires: str | None = None,
) -> Any:
    """A program over ``make_model(is_fixed, in_features, out_features)``; ``fixed`` holds the twin's ``lr``,
    ``eps``, ``optimizer`` or ``clip`` (its model changes go through ``make_model``'s flag)."""
    from .harness import Program, Setup

    fixed = fixed or {}

    def build(is_fixed: bool) -> Setup:
        overrides = fixed if is_fixed else {}
        if batches is not None:
            batch_fn, loss_fn, fin, fout = batches(), loss, 0, 0
        else:
            batch_fn, loss_fn, fin, fout = data_source(data, batch)
            loss_fn = loss or loss_fn
        model = make_model(is_fixed, fin, fout)
        rate = overrides.get("lr", lr)
        kind = overrides.get("optimizer", optimizer)
        if kind == "adam":
            opt = adam(model, rate, overrides.get("eps", eps))
        elif kind == "sgd":
            opt = sgd(model, rate, momentum)
        else:
            opt = OTHER_OPTIMIZERS[kind]([p for p in model.parameters() if p.requires_grad], lr=rate)
        return Setup(model, opt, batch_fn, loss_fn, clip=overrides.get("clip", clip), watch_layer=watch_layer,
                     set_to_none=set_to_none)

    return Program(name, family, build, labels, check, steps=steps, mode=mode, case=case, requires=requires)


OTHER_OPTIMIZERS: dict[str, Any] = {
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.05),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "adagrad": lambda params, lr: torch.optim.Adagrad(params, lr=lr),
    "nesterov": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4),
}


def mlp(widths: list[int], activation: Callable[[], nn.Module], init: str = "default", std: float = 0.1,
        bn: bool = False) -> nn.Sequential:
    """A plain ``nn.Sequential`` MLP; ``init``: default (torch's), kaiming, xavier or normal(std)."""
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        linear = nn.Linear(widths[i], widths[i + 1])
        if init == "kaiming":
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
        elif init == "xavier":
            nn.init.xavier_normal_(linear.weight)
            nn.init.zeros_(linear.bias)
        elif init == "normal":
            nn.init.normal_(linear.weight, std=std)
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(widths) - 2:
            if bn:
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(activation())
    return nn.Sequential(*layers)


LN2, LN4, LN8, LN16 = math.log(2), math.log(4), math.log(8), math.log(16)
