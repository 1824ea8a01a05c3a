"""Layer 1, nets: what to build (:class:`NetConfig`) and building it (:func:`build_model`).

``config`` (the validated dataclass and its constants) -> ``activations`` -> ``layers`` (norms, inits, the
role/block layout) -> ``mlp`` / ``recurrent`` / ``transformer`` -> ``build``. Imports only torch.
"""

from __future__ import annotations

from .activations import ACTIVATIONS, theoretical_bound
from .build import build_model
from .config import (
    CELLS,
    INITS,
    KINDS,
    NORM_POSITIONS,
    NORMS,
    RNN_ACTIVATIONS,
    STRUCTURAL_FIELDS,
    NetConfig,
    field_names,
)
from .layers import declare_layout, init_weights, make_norm

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "INITS",
    "KINDS",
    "NORMS",
    "NORM_POSITIONS",
    "RNN_ACTIVATIONS",
    "STRUCTURAL_FIELDS",
    "NetConfig",
    "build_model",
    "declare_layout",
    "field_names",
    "init_weights",
    "make_norm",
    "theoretical_bound",
]
