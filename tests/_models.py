"""The small models the tests and benchmarks share: a GPT with a tied head, a ResNet of basic blocks, a net with an
auxiliary branch. Written out here (nothing downloaded), each once; examples/train_gpt.py keeps its own GPT on
purpose (users copy that script whole).

Construction order is part of each model: under ``torch.manual_seed`` it decides every initial weight, and tests
pin verdicts and ratios measured from those weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def causal_mask(length: int) -> torch.Tensor:
    """``True`` where a position may not attend (the future), as ``nn.MultiheadAttention`` takes a bool mask."""
    return torch.triu(torch.ones(length, length, dtype=torch.bool), 1)


class GPTBlock(nn.Module):
    """A pre-LN transformer block whose MLP is ``expansion`` times wider than the stream; ``residual=False`` drops
    both skips and both norms (a stack that vanishes)."""

    def __init__(self, width: int, heads: int, residual: bool = True, expansion: int = 4) -> None:
        super().__init__()
        self.residual = residual
        self.ln_1 = nn.LayerNorm(width) if residual else nn.Identity()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width) if residual else nn.Identity()
        self.mlp = nn.Sequential(
            nn.Linear(width, expansion * width), nn.GELU(), nn.Linear(expansion * width, width)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        a = self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        x = x + a if self.residual else a
        m = self.mlp(self.ln_2(x))
        return x + m if self.residual else m


class TinyGPT(nn.Module):
    """nanoGPT's shape: token + position embeddings, ``depth`` blocks ``h.0 ...``, final norm, and a head tied to
    the token embedding. ``head_first`` declares the head before everything else: by registration the head then
    owns the shared weight, by data flow the embedding does (registration order is not data-flow order)."""

    def __init__(
        self,
        vocab: int,
        width: int,
        heads: int,
        context: int,
        depth: int,
        residual: bool = True,
        head_first: bool = False,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        if head_first:
            self.lm_head = nn.Linear(width, vocab, bias=False)
            self.h = nn.ModuleList(GPTBlock(width, heads, residual, expansion) for _ in range(depth))
            self.ln_f = nn.LayerNorm(width)
            self.wte = nn.Embedding(vocab, width)
            self.wpe = nn.Embedding(context, width)
        else:
            self.wte = nn.Embedding(vocab, width)
            self.wpe = nn.Embedding(context, width)
            self.h = nn.ModuleList(GPTBlock(width, heads, residual, expansion) for _ in range(depth))
            self.ln_f = nn.LayerNorm(width)
            self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        length = idx.shape[1]
        mask = causal_mask(length)
        x = self.wte(idx) + self.wpe(torch.arange(length))
        for block in self.h:
            x = block(x, mask)
        return self.lm_head(self.ln_f(x))


class BasicBlock(nn.Module):
    """ResNet's basic block; ``skip=False`` drops the identity path (and with it the reason ResNets train)."""

    def __init__(self, channels_in: int, channels: int, stride: int, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or channels_in != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.skip:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)


class TinyResNet(nn.Module):
    """ResNet-18's layout: a stem, four stages ``layer1 ... layer4`` of two basic blocks each (widths ``width``
    to ``8 * width``), global average pooling and ``fc``. ``width=64`` is ResNet-18 itself (11.2M parameters)."""

    def __init__(self, width: int = 8, classes: int = 10, skip: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for i in range(4):
            out = width * 2**i
            stages.append(
                nn.Sequential(BasicBlock(channels, out, 1 if i == 0 else 2, skip), BasicBlock(out, out, 1, skip))
            )
            channels = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class Branchy(nn.Module):
    """A body (4 -> 16 -> 16), an auxiliary layer ``aux`` used only when ``use_aux``, and a head (16 -> 2):
    a step without the branch leaves ``aux`` unused, which is not the same as dead. ``activation`` is ``"tanh"``
    or ``"relu"``, in the body and after ``aux``."""

    ACTIVATIONS = {"tanh": (nn.Tanh, torch.tanh), "relu": (nn.ReLU, torch.relu)}

    def __init__(self, activation: str = "tanh") -> None:
        super().__init__()
        layer, self._aux_activation = self.ACTIVATIONS[activation]
        self.body = nn.Sequential(nn.Linear(4, 16), layer(), nn.Linear(16, 16), layer())
        self.aux = nn.Linear(16, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor, use_aux: bool = True) -> torch.Tensor:
        h = self.body(x)
        return self.head(self._aux_activation(self.aux(h)) if use_aux else h)
