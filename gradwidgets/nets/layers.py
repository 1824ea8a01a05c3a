"""Pieces every net kind shares: normalization layers, weight initialization, and the role/block layout
(:func:`declare_layout`) that tells the probe which layers form the repeated stack."""

from __future__ import annotations

from typing import TypeGuard, TypeVar

import torch
from torch import nn

from .config import NetConfig

__all__ = ["declare_layout", "init_weights", "make_norm"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _is_weight_matrix(module: nn.Module) -> TypeGuard[nn.Linear]:
    return isinstance(module, nn.Linear)


def depth_of(config: NetConfig) -> int:
    """``config.depth`` as the int it is: ``NetConfig`` fills in the kind's default depth when it is built, though
    the field's type still admits ``None``."""
    depth = config.depth
    if depth is None:
        raise ValueError("NetConfig.depth is None: build the config with NetConfig(...), which sets the default")
    return depth


def stack_of(modules: nn.ModuleList, kind: type[ModuleT]) -> list[ModuleT]:
    """The modules of ``modules``, each checked to be a ``kind``: a ``ModuleList`` hands out plain ``nn.Module``,
    whose attributes (``block.act``, ``cell.weight_hh``) the type checker cannot see."""
    typed = [module for module in modules if isinstance(module, kind)]
    if len(typed) != len(modules):
        raise TypeError(f"every module of the stack must be a {kind.__name__}")
    return typed


def init_weights(model: nn.Module, config: NetConfig) -> None:
    """Apply ``config.init`` (and ``init_gain``) to every weight matrix; norms keep their ones and zeros.

    Non-default schemes also zero the biases, as the papers that introduced them do. Recurrent models apply
    their own rules for recurrent matrices (identity/orthogonal) through ``init_recurrent``.
    """
    scheme, gain = config.init, config.init_gain
    with torch.no_grad():
        for module in model.modules():
            if _is_weight_matrix(module):
                _init_matrix(module.weight, scheme, gain, config)
                if scheme != "default" and module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                _init_matrix(module.in_proj_weight, scheme, gain, config)
                if scheme != "default" and module.in_proj_bias is not None:
                    module.in_proj_bias.zero_()
        init_recurrent = getattr(model, "init_recurrent", None)
        if init_recurrent is not None:
            init_recurrent(scheme, gain)


def _init_matrix(weight: torch.Tensor, scheme: str, gain: float, config: NetConfig) -> None:
    if scheme in ("default", "identity"):
        pass
    elif scheme == "xavier":
        nn.init.xavier_normal_(weight)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(weight, nonlinearity="relu")
    elif scheme == "normal":
        nn.init.normal_(weight, 0.0, config.init_std)
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight)
    if gain != 1.0:
        weight.mul_(gain)


def make_norm(norm: str, features: int) -> nn.Module | None:
    """The normalization layer for ``norm`` over ``features`` (``None`` for ``"none"``)."""
    if norm == "batch":
        return nn.BatchNorm1d(features)
    if norm == "layer":
        return nn.LayerNorm(features)
    return None


def declare_layout(model: nn.Module, stack: str) -> tuple[dict[str, str], dict[str, int]]:
    """Roles and block indices for a model whose repeated blocks live in the ``ModuleList`` named ``stack``.

    Inside the stack: block ``i`` for ``{stack}.{i}.*``, role ``"norm"`` for norm layers, else ``"hidden"``.
    Outside it (block ``-1``): ``head`` is the head, norms are norms, the rest is input embedding.
    """
    roles: dict[str, str] = {}
    blocks: dict[str, int] = {}
    prefix = stack + "."
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        is_norm = isinstance(module, (nn.LayerNorm, nn.BatchNorm1d))
        if name.startswith(prefix):
            blocks[name] = int(name[len(prefix) :].split(".")[0])
            roles[name] = "norm" if is_norm else "hidden"
        else:
            blocks[name] = -1
            roles[name] = "norm" if is_norm else "head" if name == "head" else "embedding"
    return roles, blocks
