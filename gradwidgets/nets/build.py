"""``build_model``: a :class:`NetConfig` in, a freshly initialized plain ``torch.nn.Module`` out.

Every model built here carries two small attributes the gradient probe reads (any other module works
without them):

* ``layer_roles``: qualified module name -> ``"hidden" | "norm" | "embedding" | "head"``;
* ``layer_blocks``: qualified module name -> index of the depth level (block) it belongs to, ``-1`` outside
  the stack (input embedding, final norm, head).

The "first vs last block" ratio that :func:`gradwidgets.diagnose` reports compares those blocks.
"""

from __future__ import annotations

from torch import nn

from ..validation import check_limit
from .config import NetConfig
from .layers import init_weights
from .mlp import MLP
from .recurrent import RecurrentNet
from .transformer import TransformerNet

__all__ = ["build_model"]

_BUILDERS: dict[str, type[nn.Module]] = {"mlp": MLP, "rnn": RecurrentNet, "transformer": TransformerNet}


def build_model(config: NetConfig, in_features: int, out_features: int) -> nn.Module:
    """A freshly initialized ``nn.Module`` for ``config``.

    Inputs are ``[batch, in_features]`` for an MLP and ``[batch, seq_len, in_features]`` for the sequence
    kinds; the output is ``[batch, out_features]``. Seed torch's RNG beforehand for repeatable weights.
    """
    if not isinstance(config, NetConfig):
        raise ValueError(f"config must be a NetConfig, got {type(config).__name__}")
    in_features = check_limit("in_features", in_features, limit="features")
    out_features = check_limit("out_features", out_features, limit="features")
    model = _BUILDERS[config.kind](config, in_features, out_features)
    init_weights(model, config)
    return model
