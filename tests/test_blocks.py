"""Blocks first (issue 23): the probe's rows grouped into one bar per block, by name only, with numbers that equal
plain PyTorch over each block's parameters."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _models import TinyGPT, TinyResNet
from torch import nn

import gradwidgets as gw
from gradwidgets.core.blocks import BlockStats, block_key, block_label, block_layout, group_stats
from gradwidgets.core.layout import build_rows

transformers = pytest.importorskip("transformers")


def read(model: nn.Module, inputs: dict | torch.Tensor, detail_every: int = 1) -> gw.GradientStats:
    probe = gw.GradientProbe(model, detail_every=detail_every)
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    logits.float().pow(2).mean().backward()
    stats = probe.read()
    probe.close()
    return stats


def plain_grad_norm(params: list[nn.Parameter]) -> float:
    """sqrt(sum of p.grad^2) over ``params``, in float64, without the probe."""
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params if p.grad is not None))


def params_under(model: nn.Module, prefix: str) -> list[nn.Parameter]:
    return [p for name, p in model.named_parameters() if name.startswith(prefix + ".")]


def gpt2(layers: int = 12) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    return transformers.GPT2LMHeadModel(config)


# ------------------------------------------------------------------------------------------------ grouping


def test_gpt2_groups_into_embeddings_twelve_blocks_and_final_norm_with_plain_torch_norms() -> None:
    model = gpt2()
    stats = read(model, torch.randint(0, 64, (2, 16)))
    assert len(stats) == 75  # the comb of the issue: 2 embeddings + 12 x (2 norms + 4 matrices) + ln_f
    blocks = group_stats(stats, "blocks")
    assert isinstance(blocks, BlockStats)
    assert blocks.names == ("embeddings", *(f"h.{i}" for i in range(12)), "final norm")
    assert blocks.roles[0] == "embedding" and blocks.roles[-1] == "norm" and set(blocks.roles[1:-1]) == {"hidden"}
    assert blocks.blocks.tolist() == [-1, *range(12), -1]
    assert "lm_head" in blocks.aliases[0]  # the tied head is counted once, in the embeddings
    for i, h in enumerate(model.transformer.h):
        assert blocks.grad_norm[i + 1] == pytest.approx(plain_grad_norm(list(h.parameters())), rel=1e-6)
    embeddings = [model.transformer.wte.weight, model.transformer.wpe.weight]
    assert blocks.grad_norm[0] == pytest.approx(plain_grad_norm(embeddings), rel=1e-6)
    assert blocks.param_count.sum() == sum(p.numel() for p in model.parameters())
    assert blocks.members[1] == tuple(n for n in stats.names if n.startswith("transformer.h.0."))


def test_expanding_a_block_groups_its_modules_by_kind() -> None:
    model = gpt2(layers=2)
    stats = read(model, torch.randint(0, 64, (2, 16)))
    kinds = group_stats(stats, "kinds")
    assert kinds.names == (
        "embeddings", "h.0 norm", "h.0 attention", "h.0 mlp", "h.1 norm", "h.1 attention", "h.1 mlp", "final norm",
    )
    block = model.transformer.h[1]
    expected = {
        "h.1 attention": list(block.attn.parameters()),
        "h.1 mlp": list(block.mlp.parameters()),
        "h.1 norm": [*block.ln_1.parameters(), *block.ln_2.parameters()],
    }
    for name, params in expected.items():
        assert kinds.grad_norm[kinds.names.index(name)] == pytest.approx(plain_grad_norm(params), rel=1e-6)
    assert kinds.roles[kinds.names.index("h.1 norm")] == "norm"
    assert group_stats(stats, "rows") is stats
    with pytest.raises(ValueError, match="level: expected one of blocks, kinds, rows"):
        group_stats(stats, "layers")


def test_t5_encoder_and_decoder_blocks_side_by_side() -> None:
    torch.manual_seed(0)
    config = transformers.T5Config(
        num_layers=2, num_decoder_layers=3, d_model=16, d_ff=32, num_heads=2, d_kv=8, vocab_size=40
    )
    model = transformers.T5ForConditionalGeneration(config)
    ids = torch.randint(0, 40, (2, 8))
    stats = read(model, {"input_ids": ids, "decoder_input_ids": ids})
    blocks = group_stats(stats)
    assert blocks.names == (
        "embeddings", "encoder.block.0", "encoder.block.1", "encoder final norm",
        "decoder.block.0", "decoder.block.1", "decoder.block.2", "decoder final norm",
    )
    for stack in ("encoder", "decoder"):
        for i, block in enumerate(getattr(model, stack).block):
            got = blocks.grad_norm[blocks.names.index(f"{stack}.block.{i}")]
            assert got == pytest.approx(plain_grad_norm(list(block.parameters())), rel=1e-6)
    kinds = group_stats(stats, "kinds")
    assert "decoder.block.0 attention" in kinds.names and "decoder.block.0 mlp" in kinds.names
    cross = model.decoder.block[0].layer[1].EncDecAttention  # cross-attention is attention too
    own = model.decoder.block[0].layer[0].SelfAttention
    got = kinds.grad_norm[kinds.names.index("decoder.block.0 attention")]
    assert got == pytest.approx(plain_grad_norm([*own.parameters(), *cross.parameters()]), rel=1e-6)


def test_llama_layers_final_norm_and_untied_head() -> None:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        num_hidden_layers=3, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=40,
    )
    model = transformers.LlamaForCausalLM(config)
    stats = read(model, torch.randint(0, 40, (2, 8)))
    blocks = group_stats(stats)
    assert blocks.names == ("embeddings", "layers.0", "layers.1", "layers.2", "final norm", "head")
    assert blocks.roles[-1] == "head"
    for i in range(3):
        expected = plain_grad_norm(params_under(model, f"model.layers.{i}"))
        assert blocks.grad_norm[i + 1] == pytest.approx(expected, rel=1e-6)
    assert blocks.grad_norm[-1] == pytest.approx(plain_grad_norm([model.lm_head.weight]), rel=1e-6)


def test_resnet_stages_blocks_with_stem_and_head() -> None:
    torch.manual_seed(0)
    model = TinyResNet()
    stats = read(model, torch.randn(2, 3, 8, 8))
    blocks = group_stats(stats)
    stages = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert blocks.names == ("stem", *stages, "head")
    assert blocks.roles[0] == "embedding"  # drawn in the input colour
    for i, name in enumerate(stages):
        stage, index = name.split(".")
        block = getattr(model, stage)[int(index)]
        assert blocks.grad_norm[i + 1] == pytest.approx(plain_grad_norm(list(block.parameters())), rel=1e-6)
    stem = [model.conv1.weight, model.bn1.weight, model.bn1.bias]
    assert blocks.grad_norm[0] == pytest.approx(plain_grad_norm(stem), rel=1e-6)
    kinds = group_stats(stats, "kinds")
    assert {"layer2.0 conv", "layer2.0 norm"} <= set(kinds.names)


def test_resnet50_shape_groups_sixteen_bottlenecks() -> None:
    from test_verdicts import ResNet50

    torch.manual_seed(0)
    rows = build_rows(ResNet50())
    names = [r.name for r in rows]
    layout = block_layout(names, [r.role for r in rows], [r.kind for r in rows])
    labels = list(dict.fromkeys(layout.row_block))
    assert labels[0] == "stem" and labels[-1] == "head"
    assert labels[1:-1] == [f"layer{s}.{b}" for s, n in zip(range(1, 5), (3, 4, 6, 3), strict=True) for b in range(n)]


def test_this_projects_transformer_and_tiny_gpt() -> None:
    cfg = gw.NetConfig(kind="transformer", depth=3, width=16)
    model = gw.build_model(cfg, in_features=3, out_features=2)
    stats = read(model, torch.randn(2, cfg.seq_len, 3))
    blocks = group_stats(stats)
    assert blocks.names == ("embeddings", "blocks.0", "blocks.1", "blocks.2", "head")
    for i in range(3):
        expected = plain_grad_norm(list(model.blocks[i].parameters()))
        assert blocks.grad_norm[i + 1] == pytest.approx(expected, rel=1e-6)
    torch.manual_seed(0)
    gpt = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=4)
    tiny = group_stats(read(gpt, torch.randint(0, 32, (2, 8))))
    assert tiny.names == ("embeddings", "h.0", "h.1", "h.2", "h.3", "final norm")


def test_a_model_without_repeated_blocks_keeps_its_rows() -> None:
    cfg = gw.NetConfig(kind="mlp", depth=4, width=8, norm="layer")
    model = gw.build_model(cfg, in_features=2, out_features=2)
    stats = read(model, torch.randn(4, 2))
    assert not block_layout(stats.names, stats.roles, stats.kinds).repeated  # one layer + its norm: no block
    assert group_stats(stats) is stats and group_stats(stats, "kinds") is stats


def test_update_ratio_of_a_block_is_its_weights_motion_over_their_norm() -> None:
    model = gpt2(layers=2)
    probe = gw.GradientProbe(model, detail_every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ids = torch.randint(0, 64, (2, 16))
    probe.read()  # no gradient yet: the weights the next read compares with
    block = list(model.transformer.h[1].parameters())
    before = [p.detach().clone() for p in block]
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    stats = probe.read()
    probe.close()
    moved = math.sqrt(sum(float((p.detach() - b).double().pow(2).sum()) for p, b in zip(block, before, strict=True)))
    norm = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in block))
    blocks = group_stats(stats)
    assert blocks.update_ratio[blocks.names.index("h.1")] == pytest.approx(moved / norm, rel=1e-5)
    assert blocks.weight_norm[blocks.names.index("h.1")] == pytest.approx(norm, rel=1e-6)


def test_nonfinite_and_frozen_members_show_in_their_block() -> None:
    model = gpt2(layers=2)
    for p in model.transformer.h[0].parameters():
        p.requires_grad_(False)
    stats = read(model, torch.randint(0, 64, (2, 16)))
    blocks = group_stats(stats)
    assert blocks.frozen.tolist() == [False, True, False, False]
    grad = stats.grad_norm.copy()
    grad[stats.names.index("transformer.h.1.mlp.c_fc")] = np.inf
    broken = group_stats(gw.core.stats.make_stats({**vars_of(stats), "grad_norm": grad}, len(stats)))
    assert np.isinf(broken.grad_norm[2]) and np.isfinite(broken.grad_norm[3])


def vars_of(stats: gw.GradientStats) -> dict:
    import dataclasses

    return {f.name: getattr(stats, f.name) for f in dataclasses.fields(gw.GradientStats)}


# ------------------------------------------------------------------------------------------------ block names


def test_block_names_from_names_only_and_through_wrappers() -> None:
    names = ["transformer.wte", *(f"transformer.h.{i}.{m}" for i in range(3) for m in ("attn.c_attn", "mlp.c_fc"))]
    assert block_label("transformer.h.2.attn.c_attn", names) == "h.2"
    assert block_key("transformer.h.2.attn.c_attn", names) == "transformer.h.2"
    assert block_label("_orig_mod.transformer.h.1.mlp.c_fc", names) == "h.1"  # torch.compile's wrapper segment
    assert block_label("transformer.wte", names) == "transformer.wte"
    assert block_label("model.layers.7.self_attn") == "layers.7"  # a single name: its first numbered part
    t5 = [f"{s}.block.{i}.layer.{j}.x" for s in ("encoder", "decoder") for i in range(2) for j in range(2)]
    assert block_label("decoder.block.1.layer.0.x", t5) == "decoder.block.1"


def test_instability_signals_name_the_same_blocks() -> None:
    model = gpt2(layers=3)
    signals = gw.InstabilitySignals(model)
    try:
        stats = read(model, torch.randint(0, 64, (2, 16)))
        assert signals.blocks == ("transformer.h.0", "transformer.h.1", "transformer.h.2")
        shown = [block_label(b, stats.names) for b in signals.blocks]
        assert shown == list(group_stats(stats).names[1:4])
    finally:
        signals.remove()


def test_run_file_to_pandas_names_each_rows_block(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    torch.manual_seed(0)
    model = TinyGPT(vocab=32, width=16, heads=2, context=8, depth=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "gpt.gwrun"
    with gw.GradientLogger(model, path, every=1) as logger:
        for _ in range(3):
            ids = torch.randint(0, 32, (2, 8))
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(ids).reshape(-1, 32), ids.reshape(-1))
            loss.backward()
            logger.log(loss)
            optimizer.step()
    run = gw.load_run(path)
    frame = run.to_pandas()
    last = frame[frame.step == run.steps[-1]]
    assert dict(zip(last.layer, last.block, strict=True)) == {
        "wte": "embeddings", "wpe": "embeddings",
        **{n: n.split(".")[0] + "." + n.split(".")[1] for n in run.names if n.startswith("h.")},
        "ln_f": "final norm",
    }
    assert last.block_index.tolist() == run.blocks.tolist()
    per_block = last.groupby("block", sort=False).grad_norm.apply(lambda g: float(np.sqrt((g**2).sum())))
    grouped = group_stats(run.stats(-1))
    np.testing.assert_allclose(per_block[list(grouped.names)].to_numpy(), grouped.grad_norm, rtol=1e-12)
