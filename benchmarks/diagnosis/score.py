"""Precision, recall and F1 per label, macro-F1, and the false-alarm count, for any verdict column."""

from __future__ import annotations

import pandas as pd

from .harness import LABELS


def per_label(truth: list[str], predicted: list[str | None]) -> pd.DataFrame:
    """One row per label: support (truth count), precision, recall, F1 (0 when nothing was predicted)."""
    rows = []
    for label in LABELS:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        n_pred = sum(1 for p in predicted if p == label)
        n_true = sum(1 for t in truth if t == label)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"label": label, "support": n_true, "precision": precision, "recall": recall, "f1": f1})
    return pd.DataFrame(rows).set_index("label")


def macro_f1(table: pd.DataFrame) -> float:
    """Mean F1 over the labels that occur in the truth."""
    present = table[table["support"] > 0]
    return float(present["f1"].mean()) if len(present) else 0.0


def false_alarms(truth: list[str], predicted: list[str | None]) -> tuple[int, int]:
    """(healthy checkpoints given any verdict other than healthy, healthy checkpoints)."""
    healthy = [p for t, p in zip(truth, predicted, strict=True) if t == "healthy"]
    return sum(1 for p in healthy if p != "healthy"), len(healthy)


def combined(truth: list[str], tools: dict[str, list[str | None]]) -> pd.DataFrame:
    """The printed table: support, then precision / recall / F1 per tool, and a final macro-F1 row."""
    parts = []
    for name, predicted in tools.items():
        table = per_label(truth, predicted)
        part = table[["precision", "recall", "f1"]].copy()
        part.columns = pd.MultiIndex.from_product([[name], ["P", "R", "F1"]])
        parts.append(part)
        macro = macro_f1(table)
        part.loc["macro-F1"] = [float("nan"), float("nan"), macro]
    support = per_label(truth, truth)[["support"]]
    support.columns = pd.MultiIndex.from_product([["truth"], ["n"]])
    support.loc["macro-F1"] = [len(truth)]
    return pd.concat([support, *parts], axis=1)
