"""Run one labelled training program: train it, read it at its checkpoints, judge each checkpoint three ways.

A :class:`Program` builds a model, optimizer and data (``build(fixed=False)``; ``build(fixed=True)`` is its
fixed twin: the same program with the fault repaired) and says how its loop reads the gradients (``mode``):

* ``standard``: ``zero_grad; loss.backward(); probe.read(loss); optimizer.step()``;
* ``amp_unscaled``: ``GradScaler("cpu")``; ``scaler.scale(loss).backward()`` and the read without ``scaler=``;
* ``micro_batch``: gradient accumulation over ``accum`` micro-batches, a read after every micro-batch;
* ``zero_grad_end``: ``zero_grad()`` at the end of the loop body and the read after it (case 11).

Checkpoints: ``init`` is read number ``init_read`` (0: the first read, before any optimizer step; a
``micro_batch`` program uses read 1, the first read that came between micro-batches), ``trained`` the read
at optimizer step ``steps``. At each checkpoint the harness asks ``gw.diagnose`` (with the history of every read
so far and, where today's signature takes them, the config and optimizer) and records what the baselines need,
measured in plain torch: per-weight gradient norms and zero fractions, activation statistics from forward hooks,
the weights' change over the last step, the loss history.

The truth of a checkpoint is the program's label there; the program's ``check`` confirms it from outcomes
(does it learn, against its fixed twin; is the layer's output really zero; ...) and never from gradwidgets.
"""

from __future__ import annotations

import inspect
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import gradwidgets as gw

LABELS = (
    "healthy",
    "vanishing",
    "exploding",
    "diverging",
    "dead",
    "frozen",
    "unused",
    "no_gradient",
    "amp_unscaled",
    "micro_batch",
    "eps_limited",
    "lr_too_small",
)
MODES = ("standard", "amp_unscaled", "micro_batch", "zero_grad_end")
KIND_TO_LABEL = {"nonfinite": "diverging", "skipped": "healthy", "inconclusive": None}


def kind_to_label(kind: str) -> str | None:
    """gradwidgets' ``Diagnosis.kind`` -> benchmark label (``None``: no label, always a miss)."""
    if kind in KIND_TO_LABEL:
        return KIND_TO_LABEL[kind]
    return kind if kind in LABELS else None


@dataclass
class Setup:
    """What a program's ``build`` returns: the model, its optimizer and how to get a loss from a step's batch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batch: Callable[[int], Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    config: Any = None
    clip: float | None = None
    watch: nn.Module | None = None  # the module the probe watches (default: model)
    watch_layer: str | None = None  # a module whose activation the dead check inspects
    set_to_none: bool = True  # optimizer.zero_grad(set_to_none=...)
    activation_hooks: bool = True  # off for torch.compile'd models (a hook with .item() breaks the graph)


@dataclass
class Program:
    name: str
    family: str
    build: Callable[[bool], Setup]
    labels: tuple[str, str]  # truth at (init, trained)
    check: Callable[[RunResult, Callable[[], RunResult]], tuple[bool, str]]
    steps: int = 40
    mode: str = "standard"
    accum: int = 4
    case: int | None = None  # item of issue 19's "What was seen"
    requires: str | None = None  # an optional package ("transformers"); its family lists no program without it

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        for label in self.labels:
            if label not in LABELS:
                raise ValueError(f"{self.name}: label must be one of {list(LABELS)}, got {label!r}")

    @property
    def init_read(self) -> int:
        return 1 if self.mode == "micro_batch" else 0


@dataclass
class Checkpoint:
    """One judged read: the truth, gradwidgets' verdict, and what the baselines see."""

    program: str
    family: str
    checkpoint: str
    step: int
    truth: str
    kind: str = "error"
    message: str = ""
    layers: list[dict[str, Any]] = field(default_factory=list)
    acts: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    weight_change: list[float] = field(default_factory=list)
    optimizer: str = ""
    lr: float = float("nan")


@dataclass
class RunResult:
    """A finished run: the loss per optimizer step and what was measured at the checkpoints."""

    losses: list[float]
    checkpoints: dict[str, Checkpoint]
    dead_fraction: dict[str, float]
    grads_at_read: dict[str, int]  # checkpoint -> number of parameters holding a nonzero gradient at the read
    setup: Setup
    init_grads: list[float] = field(default_factory=list)  # per weight matrix, first read, float64 norms
    unused_at_read: dict[str, int] = field(default_factory=dict)  # trainable parameters with no .grad
    scale: float = 1.0  # the GradScaler's scale at the last read (1 without one)

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in self.losses)

    def start(self, n: int = 3) -> float:
        return float(np.mean(self.losses[:n]))

    def end(self, n: int = 5) -> float:
        tail = [v for v in self.losses[-n:]]
        return float(np.mean(tail)) if all(math.isfinite(v) for v in tail) else float("inf")


# ----------------------------------------------------------------------------------------- plain-torch readings
ACTIVATION_TYPES = (("relu", "relu"), ("sigmoid", "sigmoid"), ("tanh", "tanh"), ("gelu", "other"), ("silu", "other"))


def activation_type(module: nn.Module) -> str | None:
    label = (type(module).__name__ + " " + str(getattr(module, "name", ""))).lower()
    if isinstance(module, nn.Sequential | nn.ModuleList) or len(list(module.children())):
        return None
    for key, kind in ACTIVATION_TYPES:
        if key in label:
            return kind
    return None


class ActivationHooks:
    """Forward hooks on activation modules (and on the program's ``watch_layer``), armed for one forward."""

    def __init__(self, model: nn.Module, watch_layer: str | None) -> None:
        self.armed = False
        self.readings: dict[str, dict[str, Any]] = {}
        self.handles = []
        for name, module in model.named_modules():
            kind = activation_type(module)
            if kind is not None or (watch_layer is not None and name == watch_layer):
                self.handles.append(module.register_forward_hook(self._hook(name, kind or "watched")))

    def _hook(self, name: str, kind: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.armed or not isinstance(output, torch.Tensor) or not output.is_floating_point():
                return
            with torch.no_grad():
                out = output.detach().float()
                channels = out.transpose(1, 3) if out.dim() == 4 else out  # conv maps: a unit is a channel
                units = channels.reshape(-1, channels.shape[-1])
                zero = units == 0
                reading = self.readings.setdefault(name, {"name": name, "kind": kind, "count": 0})
                reading["count"] += 1
                reading.update(
                    zero_frac=float(zero.float().mean()),
                    dead_unit_frac=float(zero.all(dim=0).float().mean()),
                    max_abs=float(out.abs().max()) if out.numel() else 0.0,
                    sat_frac=float(_saturated(out, kind).float().mean()) if out.numel() else 0.0,
                )

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _saturated(out: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "sigmoid":
        return (out < 0.01) | (out > 0.99)
    if kind == "tanh":
        return out.abs() > 0.99
    return torch.zeros_like(out, dtype=torch.bool)


def weight_readings(model: nn.Module) -> list[dict[str, Any]]:
    """Per weight matrix / kernel (ndim >= 2), registration order: what AUTOTRAINER and DeepDiagnosis read."""
    rows = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2:
                continue
            g = p.grad
            row: dict[str, Any] = {"name": name, "requires_grad": p.requires_grad, "numel": p.numel()}
            if g is None:
                row.update(has_grad=False, grad_norm=0.0, zero_frac=1.0, grad_rms=0.0)
            else:
                g64 = g.detach().double()
                norm = float(g64.norm())
                row.update(
                    has_grad=True,
                    grad_norm=norm,
                    zero_frac=float((g == 0).float().mean()),
                    grad_rms=norm / math.sqrt(max(g.numel(), 1)),
                )
            row["weight_norm"] = float(p.detach().double().norm())
            row["finite"] = bool(torch.isfinite(p).all())
            rows.append(row)
    return rows


def diagnose_keywords() -> set[str]:
    return set(inspect.signature(gw.diagnose).parameters)


# ---------------------------------------------------------------------------------------------------- running
def run_program(
    program: Program, fixed: bool = False, judge: bool = True, seed: int = 0, eps: float | None = None
) -> RunResult:
    """Train ``program`` (or its fixed twin) and judge its two checkpoints (only when ``judge``); ``eps``
    replaces an Adam-family optimizer's eps (the eps-limited cross-check)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    setup = program.build(fixed)
    model, opt = setup.model, setup.optimizer
    if eps is not None:
        for group in opt.param_groups:
            if "eps" in group:
                group["eps"] = eps
    mode = "standard" if fixed and program.mode != "micro_batch" else program.mode
    accum = program.accum if mode == "micro_batch" else 1
    wanted = (judge and setup.activation_hooks) or setup.watch_layer is not None
    hooks = ActivationHooks(model, setup.watch_layer) if wanted else None
    probe = gw.GradientProbe(setup.watch if setup.watch is not None else model) if judge else None
    keywords = diagnose_keywords()
    history = None
    scaler = torch.amp.GradScaler("cpu") if mode == "amp_unscaled" else None
    total_reads = (program.steps + 1) * accum
    plan = {program.init_read: "init", program.steps * accum + program.init_read: "trained"}
    losses: list[float] = []
    checkpoints: dict[str, Checkpoint] = {}
    dead: dict[str, float] = {}
    grads_at_read: dict[str, int] = {}
    unused_at_read: dict[str, int] = {}
    init_grads: list[float] = []
    previous: list[torch.Tensor] | None = None
    read_index = 0
    try:
        for step in range(program.steps + 1):
            last = step == program.steps
            step_losses = []
            for micro in range(accum):
                label = plan.get(read_index)
                if hooks is not None:
                    hooks.armed = label is not None
                    hooks.readings = {}
                if mode != "zero_grad_end" and micro == 0:
                    opt.zero_grad(set_to_none=setup.set_to_none)
                loss = setup.loss(model, setup.batch(step * accum + micro))
                step_losses.append(float(loss.detach()))
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    (loss / accum).backward()
                if mode == "zero_grad_end":
                    _optimizer_step(setup, opt, scaler)
                    opt.zero_grad(set_to_none=setup.set_to_none)
                stats = probe.read(loss, step=step) if probe is not None else None
                if stats is not None:
                    if history is None:
                        history = gw.History(capacity=total_reads + 1, names=stats.names)
                    if stats.names == history.names:
                        history.append(stats)
                if read_index == 0:
                    init_grads = [r["grad_norm"] for r in weight_readings(model)]
                if label is not None:
                    unused_at_read[label] = sum(1 for p in model.parameters() if p.requires_grad and p.grad is None)
                    grads_at_read[label] = sum(
                        1 for p in model.parameters() if p.grad is not None and bool((p.grad != 0).any())
                    )
                    if hooks is not None and setup.watch_layer in hooks.readings:
                        dead[label] = hooks.readings[setup.watch_layer]["dead_unit_frac"]
                    if judge:
                        so_far = [*losses, float(np.mean(step_losses))]
                        checkpoints[label] = _judge(
                            program, label, step, stats, history, setup, keywords, hooks, so_far, previous
                        )
                read_index += 1
            losses.append(float(np.mean(step_losses)))
            if last:
                break
            if judge and step == program.steps - 1:
                previous = [p.detach().clone() for p in model.parameters()]
            if mode != "zero_grad_end":
                _optimizer_step(setup, opt, scaler)
            if not math.isfinite(losses[-1]) and not judge:
                break
    finally:
        if hooks is not None:
            hooks.close()
        if probe is not None:
            probe.close()
    final_scale = float(scaler.get_scale()) if scaler is not None else 1.0
    return RunResult(losses, checkpoints, dead, grads_at_read, setup, init_grads, unused_at_read, final_scale)


def _optimizer_step(setup: Setup, opt: torch.optim.Optimizer, scaler: Any) -> None:
    if scaler is not None:
        if setup.clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(setup.model.parameters(), setup.clip)
        scaler.step(opt)
        scaler.update()
        return
    if setup.clip is not None:
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), setup.clip)
    opt.step()


def _judge(
    program: Program,
    label: str,
    step: int,
    stats: Any,
    history: Any,
    setup: Setup,
    keywords: set[str],
    hooks: ActivationHooks | None,
    losses: list[float],
    previous: list[torch.Tensor] | None,
) -> Checkpoint:
    truth = program.labels[0 if label == "init" else 1]
    point = Checkpoint(program.name, program.family, label, step, truth)
    try:
        kwargs: dict[str, Any] = {}
        if "history" in keywords:
            kwargs["history"] = history
        if "config" in keywords:
            kwargs["config"] = setup.config
        if "optimizer" in keywords:
            kwargs["optimizer"] = setup.optimizer
        verdict = gw.diagnose(stats, **kwargs)
        point.kind, point.message = verdict.kind, verdict.message
    except Exception as error:  # a crash is a wrong verdict, reported with its message
        point.kind, point.message = "error", f"{type(error).__name__}: {error}"
        point.message += " | " + traceback.format_exc(limit=2).replace("\n", " ")
    point.layers = weight_readings(setup.model)
    point.acts = list(hooks.readings.values()) if hooks is not None else []
    point.losses = list(losses)
    if previous is not None:
        with torch.no_grad():
            point.weight_change = [
                float((p.detach() - q).norm() / (q.norm() + 1e-12))
                for p, q in zip(setup.model.parameters(), previous, strict=False)
                if p.dim() >= 2
            ]
    group = setup.optimizer.param_groups[0]
    point.optimizer = type(setup.optimizer).__name__
    point.lr = float(group.get("lr", float("nan")))
    return point


@dataclass
class ProgramOutcome:
    """A program's judged checkpoints and whether its label was confirmed by its outcome check."""

    program: str
    family: str
    labels: tuple[str, str]
    confirmed: bool
    detail: str
    checkpoints: list[Checkpoint]
    seconds: float
    case: int | None = None
    skipped: str = ""


EPS_LIMIT = 1e-8


def _not_eps_limited(program: Program, run: RunResult, detail: str, seed: int = 0) -> tuple[bool, str]:
    """A vanishing program under an Adam-family optimizer whose first weight's gradient RMS is below eps might be
    eps-limited instead (any trainable weight's gradient RMS at init below eps): it is confirmed as vanishing
    only if the same program with eps=1e-30 does not learn either (does not end below 0.9 x the run's end)."""
    group = run.setup.optimizer.param_groups[0]
    layers = run.checkpoints["init"].layers if "init" in run.checkpoints else []
    rms = min((r["grad_rms"] for r in layers if r["requires_grad"]), default=float("nan"))
    if "eps" not in group or not rms < max(float(group["eps"]), EPS_LIMIT):
        return True, detail
    tiny = run_program(program, judge=False, eps=1e-30, seed=seed)
    still = not (tiny.finite and tiny.end() < 0.9 * run.end())
    note = (f"with eps=1e-30 (smallest gradient RMS {rms:.2g} < eps) loss {tiny.start():.3g} -> {tiny.end():.3g}"
            f" ({'still stuck: not eps-limited' if still else 'FAILED: it learns, so the label is eps_limited'})")
    return still, f"{detail}; {note}"


def evaluate_program(program: Program, seed: int = 0) -> ProgramOutcome:
    """Run, check the label by its outcome, and return the judged checkpoints (errors become a failed check).
    ``seed`` seeds torch (the model's init) for the run and its twins."""
    start = time.perf_counter()
    torch.set_num_threads(1)
    try:
        run = run_program(program, seed=seed)
        twin_cache: list[RunResult] = []

        def twin() -> RunResult:
            if not twin_cache:
                twin_cache.append(run_program(program, fixed=True, judge=False, seed=seed))
            return twin_cache[0]

        confirmed, detail = program.check(run, twin)
        if confirmed and "vanishing" in program.labels:
            confirmed, detail = _not_eps_limited(program, run, detail, seed)
        points = [run.checkpoints[k] for k in ("init", "trained") if k in run.checkpoints]
    except Exception as error:
        confirmed, detail, points = False, f"harness error: {type(error).__name__}: {error}", []
        detail += " | " + traceback.format_exc(limit=4).replace("\n", " ")
    return ProgramOutcome(
        program.name,
        program.family,
        program.labels,
        bool(confirmed),
        detail,
        points,
        time.perf_counter() - start,
        program.case,
    )
