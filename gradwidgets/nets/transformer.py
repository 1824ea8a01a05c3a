"""A stack of transformer blocks (self-attention + MLP) whose residual connections and LayerNorm toggle
independently, to show what each contributes to gradient flow.

Pre-LN (``norm_position="pre"``, the modern default): ``x + attn(LN(x))``, then ``x + mlp(LN(x))``, with a final
LayerNorm before the head. Post-LN (the original 2017 layout): ``LN(x + attn(x))``, ``LN(x + mlp(x))``. With
``residual=False`` the sums become plain assignments. The sequence is mean-pooled into the head.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import ACTIVATIONS, SwiGLU
from .config import NetConfig
from .layers import declare_layout, depth_of, make_norm

__all__ = ["TransformerBlock", "TransformerNet"]


class TransformerBlock(nn.Module):
    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        width = config.width
        activation = ACTIVATIONS[config.activation]
        self.pre = config.norm_position == "pre"
        self.residual = config.residual
        self.attn = nn.MultiheadAttention(width, config.heads, bias=config.bias, batch_first=True)
        self.norm1 = make_norm(config.norm, width)
        self.norm2 = make_norm(config.norm, width)
        if activation.gated:
            hidden = max(1, 8 * width // 3)
            self.fc1: nn.Module = SwiGLU(width, hidden, bias=config.bias)
            self.act: nn.Module = nn.Identity()
        else:
            hidden = 4 * width
            self.fc1 = nn.Linear(width, hidden, bias=config.bias)
            self.act = activation.module()
        self.fc2 = nn.Linear(hidden, width, bias=config.bias)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        attended: torch.Tensor = self.attn(x, x, x, need_weights=False)[0]
        return attended

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for sublayer, norm in ((self._attend, self.norm1), (self._mlp, self.norm2)):
            if self.pre:
                update = sublayer(norm(x) if norm is not None else x)
                x = x + update if self.residual else update
            else:
                update = sublayer(x)
                x = x + update if self.residual else update
                if norm is not None:
                    x = norm(x)
        return x


class PositionEmbedding(nn.Module):
    """A learned vector per position, added to the projected inputs."""

    def __init__(self, seq_len: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(seq_len, width) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: x.shape[1]]


class TransformerNet(nn.Module):
    def __init__(self, config: NetConfig, in_features: int, out_features: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_features, config.width, bias=config.bias)
        self.position = PositionEmbedding(config.seq_len, config.width)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(depth_of(config)))
        pre_normed = config.norm != "none" and config.norm_position == "pre"
        self.final_norm = make_norm(config.norm, config.width) if pre_normed else None
        self.head = nn.Linear(config.width, out_features, bias=config.bias)
        self.layer_roles, self.layer_blocks = declare_layout(self, "blocks")

    def hidden_state_modules(self) -> list[tuple[str, nn.Module, nn.Module | None]]:
        """(name, block whose output is the hidden state, the MLP's activation module or None), input side first:
        the hook point for forward statistics and dL/dh (``gradwidgets.core.activation_stats``)."""
        return [(f"blocks.{i}", b, getattr(b, "act", None)) for i, b in enumerate(self.blocks)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.position(self.embed(x))
        for block in self.blocks:
            x = block(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        out: torch.Tensor = self.head(x.mean(dim=1))
        return out
