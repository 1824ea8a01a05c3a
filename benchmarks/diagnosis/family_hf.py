"""Family 3: Hugging Face models built from tiny configs (GPT-2, Llama, BERT, T5); nothing is downloaded.

"Residual removed" variants keep every weight and norm and subtract, with forward hooks, exactly the identity
path around each sublayer (GPT-2 and Llama: the input of the norm before attention/MLP is subtracted from that
sublayer's output; T5: from the whole sublayer's output; BERT: from the sum its post-LayerNorm receives), so
the forward and backward pass are those of the same model without skip connections.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from . import common as c
from .common import LN16

FAMILY = "Hugging Face (from config)"
REQUIRES = "transformers"


def available() -> bool:
    return importlib.util.find_spec("transformers") is not None


def _quiet() -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def build(
    kind: str, layers: int, width: int = 32, act: str | None = None, decoder_layers: int | None = None
) -> nn.Module:
    T = _quiet()
    common = {"vocab_size": c.VOCAB, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if kind == "gpt2":
        cfg = T.GPT2Config(n_positions=32, n_embd=width, n_layer=layers, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                           attn_pdrop=0.0, activation_function=act or "gelu_new", **common)
        return T.GPT2LMHeadModel(cfg)
    if kind == "llama":
        cfg = T.LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                            hidden_act=act or "silu", **common)
        return T.LlamaForCausalLM(cfg)
    if kind == "bert":
        cfg = T.BertConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                           intermediate_size=2 * width, max_position_embeddings=32, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, **common)
        return T.BertForMaskedLM(cfg)
    if kind == "t5":
        cfg = T.T5Config(d_model=width, d_kv=8, d_ff=2 * width, num_layers=layers,
                         num_decoder_layers=decoder_layers or layers, num_heads=4, dropout_rate=0.0,
                         decoder_start_token_id=0, **common)
        return T.T5ForConditionalGeneration(cfg)
    raise ValueError(f"kind must be one of ['gpt2', 'llama', 'bert', 't5'], got {kind!r}")


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Causal LMs predict the next token, BERT reproduces its input, T5 maps a sequence to its successor."""
    name = type(model).__name__
    if name.startswith("T5"):
        return model(input_ids=ids, labels=(3 * ids + 1) % c.VOCAB).loss
    return model(input_ids=ids, labels=ids).loss


# --------------------------------------------------------------------------------------------- no residual
class _Stash:
    value: torch.Tensor | None = None


def _strip_around(before: nn.Module, sublayer: nn.Module) -> None:
    """``x + sublayer(norm(x))`` -> ``sublayer(norm(x))``: ``before`` is the norm whose input is ``x``."""
    stash = _Stash()

    def keep(module: nn.Module, args: Any, kwargs: Any) -> None:
        stash.value = args[0] if args else kwargs["hidden_states"]

    def subtract(module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] - stash.value, *output[1:])
        return output - stash.value

    before.register_forward_pre_hook(keep, with_kwargs=True)
    sublayer.register_forward_hook(subtract, with_kwargs=True)


def _strip_whole(sublayer: nn.Module) -> None:
    """A sublayer that returns ``x + f(x)`` (T5's) returns ``f(x)``."""

    def subtract(module: nn.Module, args: Any, kwargs: Any, output: Any) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        if isinstance(output, tuple):
            return (output[0] - x, *output[1:])
        return output - x

    sublayer.register_forward_hook(subtract, with_kwargs=True)


def _strip_post_norm(output_module: nn.Module) -> None:
    """BERT's ``LayerNorm(dense(h) + input_tensor)`` -> ``LayerNorm(dense(h))``."""
    stash = _Stash()

    def keep(module: nn.Module, args: Any, kwargs: Any) -> None:
        stash.value = args[1] if len(args) > 1 else kwargs["input_tensor"]

    def subtract(module: nn.Module, args: Any) -> Any:
        return (args[0] - stash.value,)

    output_module.register_forward_pre_hook(keep, with_kwargs=True)
    output_module.LayerNorm.register_forward_pre_hook(subtract)


def remove_residuals(model: nn.Module, only: str | None = None) -> nn.Module:
    """Remove the skip connections of every block (``only="decoder"``: of T5's decoder only)."""
    for name, module in model.named_modules():
        kind = type(module).__name__
        if only is not None and not name.startswith(only):
            continue
        if kind == "GPT2Block":
            _strip_around(module.ln_1, module.attn)
            _strip_around(module.ln_2, module.mlp)
        elif kind == "LlamaDecoderLayer":
            _strip_around(module.input_layernorm, module.self_attn)
            _strip_around(module.post_attention_layernorm, module.mlp)
        elif kind in ("T5LayerSelfAttention", "T5LayerCrossAttention", "T5LayerFF"):
            _strip_whole(module)
        elif kind in ("BertSelfOutput", "BertOutput"):
            _strip_post_norm(module)
    return model


def _freeze_bert_lower(model: nn.Module) -> nn.Module:
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    for p in model.bert.encoder.layer[0].parameters():
        p.requires_grad_(False)
    return model


def programs() -> list:
    if not available():
        return []

    def P(name: str, make: Any, labels: tuple[str, str], check: c.Check, **kw: Any) -> Any:
        kw.setdefault("lr", 3e-3)
        kw.setdefault("steps", 40)
        return c.program(name, FAMILY, lambda f, i, o: make(f), labels, check, loss=lm_loss,
                         batches=lambda: c.token_batches(), requires=REQUIRES, **kw)

    H = ("healthy", "healthy")
    V = ("vanishing", "vanishing")
    return [
        # ---- healthy
        P("hf/gpt2-d2-w32", lambda f: build("gpt2", 2), H, c.healthy(0.7)),
        P("hf/gpt2-d4-w64", lambda f: build("gpt2", 4, 64), H, c.healthy(0.7), lr=1e-3),
        P("hf/llama-d2-w32", lambda f: build("llama", 2), H, c.healthy(0.7)),
        P("hf/llama-d4-w64", lambda f: build("llama", 4, 64), H, c.healthy(0.7), lr=1e-3),
        P("hf/bert-d2-w32", lambda f: build("bert", 2), H, c.healthy(0.7)),
        P("hf/t5-2+2-w32", lambda f: build("t5", 2), H, c.healthy(0.7)),
        P("hf/gpt2-d6-w32-sgd", lambda f: build("gpt2", 6), H, c.healthy(0.8), optimizer="sgd", lr=0.1, steps=60),
        # ---- vanishing (residual removed; LayerNorm kept)
        P("hf/gpt2-d24-noresid", lambda f: build("gpt2", 24) if f else remove_residuals(build("gpt2", 24)), V,
          c.vanishing(LN16), lr=1e-3, case=7),
        P("hf/llama-d8-noresid-sigmoid", lambda f: build("llama", 8, act="sigmoid") if f
          else remove_residuals(build("llama", 8, act="sigmoid")), V, c.vanishing(LN16), lr=1e-3, case=7),
        P("hf/bert-d12-noresid", lambda f: build("bert", 12) if f else remove_residuals(build("bert", 12)), V,
          c.vanishing(LN16), lr=1e-3, case=7),
        P("hf/t5-6+6-decoder-noresid", lambda f: build("t5", 6) if f else remove_residuals(build("t5", 6), "decoder"),
          V, c.vanishing(lag=3.0), lr=1e-3, case=2),
        P("hf/t5-6+6-noresid", lambda f: build("t5", 6) if f else remove_residuals(build("t5", 6)), V,
          c.vanishing(lag=3.0), lr=1e-3, case=1),
        # ---- training faults and reading bugs
        P("hf/gpt2-d2-sgd-lr", lambda f: build("gpt2", 2), ("diverging", "diverging"), c.diverging(0.7),
          optimizer="sgd", lr=100.0, fixed={"lr": 0.1}),
        P("hf/llama-d2-adam-lr1e-7", lambda f: build("llama", 2), ("lr_too_small", "lr_too_small"),
          c.lr_too_small(), lr=1e-7, fixed={"lr": 3e-3}),
        P("hf/bert-d2-frozen-lower", lambda f: _freeze_bert_lower(build("bert", 2)), ("frozen", "frozen"),
          c.frozen(0.85)),
        P("hf/gpt2-d2-amp-unscaled", lambda f: build("gpt2", 2), ("amp_unscaled", "amp_unscaled"), c.amp_unscaled(),
          mode="amp_unscaled", case=8),
        P("hf/llama-d2-micro-batch", lambda f: build("llama", 2), ("micro_batch", "micro_batch"), c.micro_batch(),
          mode="micro_batch", case=9),
        P("hf/t5-2+2-zero-grad-end", lambda f: build("t5", 2), ("no_gradient", "no_gradient"), c.no_gradient(),
          mode="zero_grad_end", case=11),
    ]
