"""Recurrent nets (vanilla RNN, LSTM, GRU) unrolled step by step so that the gradient reaching every time step
can be measured: the product the chain rule forms runs over time here, not over layers.

The watched state is the LSTM's cell state (the "constant error carousel" of Hochreiter & Schmidhuber 1997) and
the hidden state for RNN and GRU cells, in the top layer. ``state_grad_norms()`` returns ``||dL/ds_t||`` for
every step ``t`` (input side first) after ``backward()``; the gradient probe picks it up automatically.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import NetConfig
from .layers import declare_layout, depth_of, stack_of

__all__ = ["RecurrentNet"]


class RecurrentNet(nn.Module):
    def __init__(self, config: NetConfig, in_features: int, out_features: int) -> None:
        super().__init__()
        self.cell_kind = config.cell
        self.width = config.width
        self.forget_bias = float(config.forget_bias)
        self.init_std = config.init_std
        depth = depth_of(config)
        cells: list[nn.RNNCellBase] = []
        for layer in range(depth):
            size_in = in_features if layer == 0 else config.width
            if config.cell == "lstm":
                cells.append(nn.LSTMCell(size_in, config.width, bias=config.bias))
            elif config.cell == "gru":
                cells.append(nn.GRUCell(size_in, config.width, bias=config.bias))
            else:
                cells.append(nn.RNNCell(size_in, config.width, bias=config.bias, nonlinearity=config.activation))
        self.blocks = nn.ModuleList(cells)
        self.norms = (
            nn.ModuleList(nn.LayerNorm(config.width) for _ in range(depth)) if config.norm == "layer" else None
        )
        self.head = nn.Linear(config.width, out_features, bias=config.bias)
        self.state_name = "cell state" if config.cell == "lstm" else "hidden state"
        self.track_states = True
        self._states: list[torch.Tensor] = []
        roles, blocks = declare_layout(self, "blocks")
        for index in range(depth):
            if self.norms is not None:
                blocks[f"norms.{index}"] = index
        self.layer_roles, self.layer_blocks = roles, blocks
        self._set_forget_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, _ = x.shape
        watch = self.track_states and torch.is_grad_enabled()
        states: list[torch.Tensor] = []
        inputs = list(x.unbind(1))
        last_layer = len(self.blocks) - 1
        for layer, cell in enumerate(self.blocks):
            h = x.new_zeros(batch, self.width)
            c = x.new_zeros(batch, self.width)
            outputs = []
            for t in range(steps):
                if self.cell_kind == "lstm":
                    h, c = cell(inputs[t], (h, c))
                    watched = c
                else:
                    h = cell(inputs[t], h)
                    watched = h
                if watch and layer == last_layer:
                    watched.retain_grad()
                    states.append(watched)
                outputs.append(self.norms[layer](h) if self.norms is not None else h)
            inputs = outputs
        self._states = states
        out: torch.Tensor = self.head(inputs[-1])
        return out

    def state_grad_norms(self) -> np.ndarray | None:
        """``||dL/ds_t||`` per time step from the last forward pass (``None`` before a backward)."""
        grads = [s.grad for s in self._states if s.grad is not None]
        if not grads or len(grads) != len(self._states):
            return None
        norms = torch.stack(torch._foreach_norm(grads, 2)).double().numpy()
        self._states = []
        return norms

    @torch.no_grad()
    def init_recurrent(self, scheme: str, gain: float) -> None:
        """Recurrent matrices: ``identity`` (IRNN, Le et al. 2015), ``orthogonal`` per gate, or the matrix
        schemes of :func:`gradwidgets.nets.init_weights` applied to every weight of the cell."""
        for cell in stack_of(self.blocks, nn.RNNCellBase):
            gates = cell.weight_hh.shape[0] // self.width
            if scheme == "identity":
                cell.weight_hh.copy_(torch.eye(self.width))
                for bias in _biases(cell):
                    bias.zero_()
            elif scheme == "orthogonal":
                for g in range(gates):
                    nn.init.orthogonal_(cell.weight_hh[g * self.width : (g + 1) * self.width])
                nn.init.xavier_normal_(cell.weight_ih)
            elif scheme in ("xavier", "kaiming", "normal"):
                for weight in (cell.weight_ih, cell.weight_hh):
                    if scheme == "xavier":
                        nn.init.xavier_normal_(weight)
                    elif scheme == "kaiming":
                        nn.init.kaiming_normal_(weight, nonlinearity="relu")
                    else:
                        nn.init.normal_(weight, 0.0, self.init_std)
            if scheme != "default":
                for bias in _biases(cell):
                    bias.zero_()
            if gain != 1.0:
                cell.weight_hh.mul_(gain)
                cell.weight_ih.mul_(gain)
        self._set_forget_bias()

    @torch.no_grad()
    def _set_forget_bias(self) -> None:
        """LSTM gates are ordered (input, forget, cell, output); the forget gate's total bias is set exactly."""
        if self.cell_kind != "lstm":
            return
        w = self.width
        for cell in stack_of(self.blocks, nn.RNNCellBase):
            biases = _biases(cell)
            if biases:
                bias_ih, bias_hh = biases
                bias_ih[w : 2 * w] = self.forget_bias
                bias_hh[w : 2 * w] = 0.0


def _biases(cell: nn.RNNCellBase) -> list[torch.Tensor]:
    """The cell's ``bias_ih`` and ``bias_hh``, or none when it was built with ``bias=False`` (torch declares no
    type for them on purpose: they may be ``None``)."""
    return [bias for bias in (cell.bias_ih, cell.bias_hh) if isinstance(bias, torch.Tensor)]
