"""What the training apps say, written once: the ratio as the verdict prints it, the banner for a frame or an
error, and the help text of valid values (read from :mod:`gradwidgets.validation`, so it cannot drift).

The Playground (one run) and Compare (runs in lockstep) share these; ``lockstep`` picks Compare's wording
where a run stopping means something different (the other runs go on).
"""

from __future__ import annotations

import math

from ..core.data import DATASETS, SEQUENCE_DATASETS
from ..core.diagnosis import format_number
from ..nets.activations import ACTIVATIONS
from ..validation import CELLS, INITS, KINDS, LIMITS, NORMS, OPTIMIZERS, WIDTH_CHOICES
from ..widgets.banner import DiagnosisBanner
from .frames import SessionFrame

__all__ = ["AT_INIT_NOTE", "ratio_text", "show_error", "show_frame", "valid_values"]

AT_INIT_NOTE = "At initialization: one forward/backward pass, no training step yet. Press ▶ Play to train."
AT_INIT_NOTE_LOCKSTEP = "At initialization (no training step yet)."


def ratio_text(frame: SessionFrame) -> str:
    """The frame's first/last ratio (through time for recurrent nets) exactly as the diagnosis prints it."""
    diagnosis = frame.diagnosis
    if diagnosis is None:
        return ""
    value = diagnosis.time_ratio if frame.config.kind == "rnn" else diagnosis.ratio
    return format_number(value) if value is not None and math.isfinite(value) else ""


def show_frame(banner: DiagnosisBanner, frame: SessionFrame, ratio: str, *, playing: bool, lockstep: bool) -> None:
    """The verdict of ``frame`` with the note that says where the run stands (ready, diverged, replaying, ...)."""
    diagnosis = frame.diagnosis
    if diagnosis is None:
        what = "train all runs in lockstep" if lockstep else "train, or Step for a single step"
        banner.show_text("waiting", "Ready", f"Press ▶ Play to {what}.")
        return
    note = ""
    if frame.diverged and lockstep:
        note = f"Diverged at step {frame.steps}: this run stopped. Reset restarts all."
    elif frame.diverged and not playing:
        note = (
            f"Paused automatically: training diverged at step {frame.steps}. "
            "Press Reset to start again, then lower the learning rate."
        )
    elif frame.replay is not None:
        first, last = frame.history_steps
        note = f"Replaying step {frame.replay} (steps {first}–{last} held). Press ▶ Play to continue live."
    elif frame.at_init:
        note = AT_INIT_NOTE_LOCKSTEP if lockstep else AT_INIT_NOTE
    banner.show(diagnosis, note=note, ratio_text=ratio)


def show_error(banner: DiagnosisBanner, error: BaseException, fix: str) -> None:
    """Training stopped on ``error``: its type, its message and what to press."""
    banner.show_text("error", f"Training stopped: {type(error).__name__}", str(error) or repr(error), fix)


def valid_values() -> str:
    """The values each setting accepts, from the same tables the validation uses (so the help cannot drift)."""

    def by_kind(kind: str) -> str:
        return ", ".join(d for d in DATASETS if (d in SEQUENCE_DATASETS) == (kind != "mlp"))

    limit = LIMITS
    bias = limit["forget_bias"].for_class()  # the slider's span: the class server's range
    slider_bias = f"{bias.low:g} to {bias.high:g}"
    rows = [
        ("activation", ", ".join(ACTIVATIONS)),
        ("depth", f"{limit['depth'].describe()} (hidden layers; mlp default 10)"),
        ("width", f"{limit['width'].describe()} (slider: {', '.join(map(str, WIDTH_CHOICES))})"),
        ("residual", "True or False (skip connections)"),
        ("norm", ", ".join(NORMS) + " (batch: mlp only)"),
        ("init", ", ".join(INITS) + " (identity: rnn cell only)"),
        ("optimizer", ", ".join(OPTIMIZERS)),
        ("lr", limit["lr"].describe()),
        ("batch_size", limit["batch_size"].describe()),
        ("dataset", f"mlp: {by_kind('mlp')}; rnn, transformer: {by_kind('rnn')}"),
        ("seed", limit["seed"].describe()),
        ("kind", ", ".join(KINDS) + " (fixed once built)"),
        ("cell, seq_len", f"{', '.join(CELLS)}; {limit['seq_len'].describe()} (kind='rnn')"),
        ("forget_bias", f"{limit['forget_bias'].describe()} (cell='lstm'; the slider spans {slider_bias})"),
    ]
    width = max(len(name) for name, _ in rows)
    return "Valid values:\n" + "\n".join(f"    {name.ljust(width)}  {values}" for name, values in rows)
