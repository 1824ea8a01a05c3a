"""The benchmark's small GPT, written out (nothing downloaded): token + position embeddings, pre-LN blocks ``h.0 ...``
whose attention names its projections like Llama/OLMo (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``) and, in the
qk-layernorm twin, normalises queries and keys per head (``q_norm``, ``k_norm``; Wortsman et al. 2023, Dehghani et
al. 2023), a final norm and an untied head ``lm_head``. The data are generated: sequences whose second half
repeats the first, so attention has to become sharp (induction) and the loss can drop well below uniform.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.is_causal = True
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        shape = (batch, length, self.heads, self.head_dim)
        q, k = self.q_proj(x).view(shape), self.k_proj(x).view(shape)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        v = self.v_proj(x).view(shape)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        out = self.o_proj(out.transpose(1, 2).reshape(batch, length, width))
        return out


class Block(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, qk_norm)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class SmallGPT(nn.Module):
    def __init__(self, vocab: int, width: int, heads: int, context: int, depth: int, qk_norm: bool = False) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList(Block(width, heads, qk_norm) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02 if "o_proj" not in name else 0.02 / math.sqrt(2 * depth))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def successor_table(vocab: int, successors: int, seed: int) -> torch.Tensor:
    """Each token's ``successors`` allowed next tokens (a fixed random bigram language)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(vocab, generator=gen)[:successors] for _ in range(vocab)])


def copy_batch(gen: torch.Generator, table: torch.Tensor, batch: int, half: int) -> torch.Tensor:
    """``batch`` sequences of ``2 * half`` tokens: a walk of the bigram language, then the same walk again, so a
    model first learns the bigrams (loss from ln V to ln(successors)) and then to copy (attention turns sharp)."""
    vocab, successors = table.shape
    tokens = [torch.randint(0, vocab, (batch,), generator=gen)]
    for _ in range(half - 1):
        choice = torch.randint(0, successors, (batch,), generator=gen)
        tokens.append(table[tokens[-1], choice])
    first = torch.stack(tokens, dim=1)
    return torch.cat([first, first], dim=1)
