"""Family 5: LoRA adapters written out (A random, B = 0, scale alpha/r) on a frozen backbone: a tiny GPT-2 from
config, a tiny Llama, or a plain MLP. B = 0 at init means A gets exactly zero gradient at the first step: a zero
by design, not a dead layer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import common as c
from .family_hf import available as hf_available
from .family_hf import build as hf_build
from .family_hf import lm_loss

FAMILY = "adapters (LoRA on a frozen backbone)"


class LoRADelta(nn.Module):
    """``x -> (x A^T) B^T * alpha / r``; B = 0 at init (or A = 0 too, for the adapter that can never learn)."""

    def __init__(self, fin: int, fout: int, rank: int = 4, alpha: float = 8.0, zero_a: bool = False) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.zeros(rank, fin))
        self.lora_B = nn.Parameter(torch.zeros(fout, rank))
        if not zero_a:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_A.t()) @ self.lora_B.t() * self.scale


class LoRALinear(nn.Module):
    """A base ``nn.Linear`` (or GPT-2's ``Conv1D``) plus an adapter; ``active=False``: the adapter is built but
    forward() forgets to apply it."""

    def __init__(self, base: nn.Module, rank: int = 4, zero_a: bool = False, active: bool = True) -> None:
        super().__init__()
        self.base = base
        fin, fout = (base.in_features, base.out_features) if isinstance(base, nn.Linear) else (base.nx, base.nf)
        self.lora = LoRADelta(fin, fout, rank, zero_a=zero_a)
        self.active = active

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.lora(x) if self.active else out


def add_lora(model: nn.Module, targets: tuple[str, ...], freeze: bool = True, **kw: Any) -> nn.Module:
    """Freeze the backbone (``freeze``) and wrap every submodule whose name ends with one of ``targets``."""
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and not isinstance(child, LoRALinear):
                setattr(module, child_name, LoRALinear(child, **kw))
    return model


def backbone_mlp(fin: int, fout: int, depth: int = 4, width: int = 64) -> nn.Sequential:
    """A "pretrained" MLP: trained for 40 Adam steps on moons, so its frozen features are useful."""
    model = c.mlp([fin] + [width] * depth + [fout], nn.ReLU, "kaiming")
    batch_fn, loss_fn, _, _ = c.tabular("moons", batch=64, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(40):
        opt.zero_grad()
        loss_fn(model, batch_fn(i)).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model


def _mlp_lora(freeze: bool = True, applied: tuple[str, ...] | None = None, **kw: Any) -> Any:
    """LoRA on the MLP's hidden linears; ``applied``: only those adapters are applied in forward()."""

    def make(fixed: bool, fin: int, fout: int) -> nn.Module:
        model = backbone_mlp(fin, fout)
        # nn.Sequential's children are named "0", "2", ...: adapt the hidden linears, not the input/output ones
        hidden = tuple(str(i) for i in range(2, 2 * 4, 2))
        model = add_lora(model, hidden, freeze=freeze, **kw)
        if applied is not None:
            for name in hidden:
                model.get_submodule(name).active = name in applied
        return model

    return make


def programs() -> list:
    def M(name: str, make: Any, labels: tuple[str, str], check: c.Check, **kw: Any) -> Any:
        kw.setdefault("steps", 40)
        return c.program(name, FAMILY, make, labels, check, data="circles", **kw)

    out = [
        M("lora/mlp-r4", _mlp_lora(), ("frozen", "frozen"), c.frozen(0.8), case=4),
        M("lora/mlp-r4-full-finetune", _mlp_lora(freeze=False), ("healthy", "healthy"), c.healthy(0.8), lr=3e-3,
          case=4),
        M("lora/mlp-r4-a-and-b-zero", _mlp_lora(zero_a=True), ("dead", "dead"), c.dead(), watch_layer="2.lora"),
        M("lora/mlp-r4-lr1e-7", _mlp_lora(), ("lr_too_small", "lr_too_small"), c.lr_too_small(), lr=1e-7,
          fixed={"lr": 1e-2}),
        M("lora/mlp-r4-amp-unscaled", _mlp_lora(), ("amp_unscaled", "amp_unscaled"), c.amp_unscaled(0.95),
          mode="amp_unscaled", case=8),
        M("lora/mlp-r4-not-applied", _mlp_lora(applied=("2",)), ("unused", "unused"), c.unused(0.8)),
    ]
    if not hf_available():
        return out

    def G(name: str, make: Any, labels: tuple[str, str], check: c.Check, **kw: Any) -> Any:
        kw.setdefault("lr", 1e-2)
        kw.setdefault("steps", 40)
        return c.program(name, FAMILY, lambda f, i, o: make(f), labels, check, loss=lm_loss,
                         batches=lambda: c.token_batches(), requires="transformers", **kw)

    gpt_targets = ("c_attn", "c_fc")
    F = ("frozen", "frozen")
    out += [
        G("lora/gpt2-d2-r4", lambda f: add_lora(hf_build("gpt2", 2), gpt_targets), F, c.frozen(0.9), case=4),
        G("lora/gpt2-d4-r8", lambda f: add_lora(hf_build("gpt2", 4), gpt_targets, rank=8), F, c.frozen(0.9)),
        G("lora/llama-d2-r4", lambda f: add_lora(hf_build("llama", 2), ("q_proj", "v_proj", "up_proj")), F,
          c.frozen(0.9)),
        G("lora/gpt2-d2-full-finetune", lambda f: add_lora(hf_build("gpt2", 2), gpt_targets, freeze=False),
          ("healthy", "healthy"), c.healthy(0.7), lr=1e-3, case=4),
        G("lora/gpt2-d2-sgd-lr", lambda f: add_lora(hf_build("gpt2", 2), gpt_targets), ("diverging", "diverging"),
          c.diverging(0.9), optimizer="sgd", lr=300.0, fixed={"lr": 1.0}),
        G("lora/gpt2-d2-micro-batch", lambda f: add_lora(hf_build("gpt2", 2), gpt_targets),
          ("micro_batch", "micro_batch"), c.micro_batch(), mode="micro_batch", case=9),
        G("lora/gpt2-d2-zero-grad-end", lambda f: add_lora(hf_build("gpt2", 2), gpt_targets),
          ("no_gradient", "no_gradient"), c.no_gradient(0.9), mode="zero_grad_end", case=11),
    ]
    return out
