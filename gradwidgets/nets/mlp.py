"""The multilayer perceptron: an input layer, ``depth`` hidden layers of ``width`` units, a linear head.

The input layer (``input``: in_features -> width, with the activation) sits outside the stack: it is never
residual (the shapes differ) nor normalized (normalizing a 2-feature input across its features would throw the
data away). The ``depth`` hidden layers all map width -> width, so a residual skip is a true identity and the
first/last comparison sets like against like: the reference magnitudes (sigmoid, depth 10, ~1e-7) are ratios of
the first to the last of these.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import ACTIVATIONS, SwiGLU
from .config import NetConfig
from .layers import declare_layout, depth_of, make_norm, stack_of

__all__ = ["MLP", "MLPBlock"]


class MLPBlock(nn.Module):
    """One hidden layer: linear map (or SwiGLU), activation, optional norm and skip."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        config: NetConfig,
        residual: bool,
        normalized: bool = True,
    ) -> None:
        super().__init__()
        activation = ACTIVATIONS[config.activation]
        self.pre = config.norm_position == "pre"
        self.residual = residual
        if activation.gated:
            self.layer: nn.Module = SwiGLU(in_features, out_features, bias=config.bias)
            self.act: nn.Module = nn.Identity()
        else:
            self.layer = nn.Linear(in_features, out_features, bias=config.bias)
            self.act = activation.module()
        norm_features = in_features if self.pre else out_features
        self.norm = make_norm(config.norm, norm_features) if normalized else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor = x
        if self.norm is not None and self.pre:
            h = self.norm(h)
        h = self.layer(h)
        if self.norm is not None and not self.pre and not self.residual:
            h = self.norm(h)
        h = self.act(h)
        if self.residual:
            h = x + h
            if self.norm is not None and not self.pre:
                h = self.norm(h)
        return h


class MLP(nn.Module):
    def __init__(self, config: NetConfig, in_features: int, out_features: int) -> None:
        super().__init__()
        self.input = MLPBlock(in_features, config.width, config, residual=False, normalized=False)
        self.blocks = nn.ModuleList(
            MLPBlock(config.width, config.width, config, residual=config.residual) for _ in range(depth_of(config))
        )
        pre_normed = config.norm != "none" and config.norm_position == "pre"
        self.final_norm = make_norm(config.norm, config.width) if pre_normed else None
        self.head = nn.Linear(config.width, out_features, bias=config.bias)
        self.layer_roles, self.layer_blocks = declare_layout(self, "blocks")

    def hidden_state_modules(self) -> list[tuple[str, nn.Module, nn.Module | None]]:
        """(name, module whose output is the hidden state h_k, its activation module or None), input side first:
        the hook point for forward statistics and dL/dh (``gradwidgets.core.activation_stats``)."""
        stack = stack_of(self.blocks, MLPBlock)
        layers = [("input", self.input)] + [(f"blocks.{i}", b) for i, b in enumerate(stack)]
        return [(name, block, None if isinstance(block.act, nn.Identity) else block.act) for name, block in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)
        for block in self.blocks:
            x = block(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        out: torch.Tensor = self.head(x)
        return out
