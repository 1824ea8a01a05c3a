"""Verdicts on models nobody here wrote: tied language models, BERT/ResNet shapes, torch's stacked RNNs, fp16/bf16
and AMP loops, sparse embeddings, odd parameters and changed models. Each model is written out, here or in
tests/_models.py (no download); numbers are checked against plain PyTorch on the same tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _models import Branchy, TinyGPT, TinyResNet
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw

VOCAB, WIDTH, HEADS, CONTEXT = 50, 64, 4, 16


def own_norm(module: nn.Module) -> float:
    """L2 norm of the gradients of the parameters ``module`` owns directly, in float64."""
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in module.parameters(recurse=False)))


def plain_norm(modules: list[nn.Module], skip_norms: bool = True) -> float:
    """L2 norm of the gradients of every parameter under ``modules`` (each Parameter once), in float64."""
    seen, squares = set(), 0.0
    for root in modules:
        for module in root.modules():
            if skip_norms and "Norm" in type(module).__name__:
                continue
            for p in module.parameters(recurse=False):
                if id(p) in seen or p.grad is None:
                    continue
                seen.add(id(p))
                g = p.grad.coalesce().values() if p.grad.is_sparse else p.grad
                squares += float(g.double().pow(2).sum())
    return math.sqrt(squares)


# ------------------------------------------------------------------------------------------ tied language models
def tiny_gpt(depth: int, residual: bool = True) -> TinyGPT:
    return TinyGPT(VOCAB, WIDTH, HEADS, CONTEXT, depth, residual)


def lm_loss(model: nn.Module, batch: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, VOCAB, (batch, CONTEXT + 1), generator=g)
    logits = model(idx[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))


def test_tied_gpt_without_residuals_is_vanishing_and_compares_its_blocks():
    torch.manual_seed(0)
    model = tiny_gpt(24, residual=False)
    probe = gw.GradientProbe(model)
    loss = lm_loss(model)
    loss.backward()
    stats = probe.read(loss)
    d = gw.diagnose(stats)
    assert d.kind == "vanishing", d.message
    assert d.compared == ("h.0", "h.23")
    assert "lm_head" not in stats.names and stats.aliases[stats.names.index("wte")] == "lm_head"
    assert stats.param_count.sum() == sum(p.numel() for p in model.parameters()), "the tied weight counted once"
    expected = plain_norm([model.h[0]]) / plain_norm([model.h[23]])
    assert d.ratio == pytest.approx(expected, rel=1e-4)
    assert d.ratio < 1e-3


def test_tied_gpt_with_residuals_is_healthy_with_the_measured_ratio():
    torch.manual_seed(0)
    model = tiny_gpt(6, residual=True)
    probe = gw.GradientProbe(model)
    lm_loss(model).backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    assert d.kind == "healthy", d.message
    assert d.compared == ("h.0", "h.5") and "h.0 vs h.5" in d.message
    assert d.ratio == pytest.approx(plain_norm([model.h[0]]) / plain_norm([model.h[5]]), rel=1e-4)
    roles = dict(zip(stats.names, stats.roles, strict=True))
    assert roles["wte"] == "embedding" and roles["ln_f"] == "norm"
    assert stats.blocks[stats.names.index("wte")] == -1 and stats.blocks[stats.names.index("h.5.mlp.2")] == 5
    assert stats.names[:2] == ("wte", "wpe") and stats.names[-1] == "ln_f"


def test_the_issue_tied_sigmoid_stack_reads_its_body_not_one_tensor_twice():
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Embedding(VOCAB, WIDTH)]
    for _ in range(20):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Sigmoid()]
    layers.append(nn.Linear(WIDTH, VOCAB))
    model = nn.Sequential(*layers)
    model[41].weight = model[0].weight
    probe = gw.GradientProbe(model)
    idx = torch.randint(0, VOCAB, (64,))
    F.cross_entropy(model(idx), idx).backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    assert d.kind == "vanishing", d.message
    assert d.compared == ("1", "39")
    assert stats.roles[stats.names.index("41")] == "head"  # only the head's bias is its own
    assert stats.param_count[stats.names.index("41")] == VOCAB
    expected = plain_norm([model[1]]) / plain_norm([model[39]])
    assert d.ratio == pytest.approx(expected, rel=1e-4) and d.ratio < 1e-12


# ------------------------------------------------------------------------------------------ order of the data
class HeadFirst(nn.Module):
    """The head is declared before the body it reads from."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(WIDTH, 2)
        self.body = nn.Sequential(*[m for _ in range(20) for m in (nn.Linear(WIDTH, WIDTH), nn.Sigmoid())])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_a_head_declared_before_its_body_is_ordered_by_the_forward_pass():
    torch.manual_seed(0)
    model = HeadFirst()
    probe = gw.GradientProbe(model)
    assert probe.names[0] == "head", "before any forward: registration order"
    F.cross_entropy(model(torch.randn(128, WIDTH)), torch.randint(0, 2, (128,))).backward()
    stats = probe.read()
    assert stats.names[0] == "body.0" and stats.names[-1] == "head"
    d = gw.diagnose(stats)
    assert d.kind == "vanishing" and d.compared == ("body.0", "body.38"), d.message
    assert d.ratio == pytest.approx(plain_norm([model.body[0]]) / plain_norm([model.body[38]]), rel=1e-4)
    assert not model.head._forward_pre_hooks and not model._forward_hooks, "the recording hooks removed themselves"


# ------------------------------------------------------------------------------------------ BERT and ResNet shapes
class TinyBert(nn.Module):
    def __init__(self, n_layer: int = 6) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, WIDTH)
        self.position_embeddings = nn.Embedding(CONTEXT, WIDTH)
        self.embeddings_norm = nn.LayerNorm(WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.0, batch_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.pooler = nn.Linear(WIDTH, WIDTH)
        self.classifier = nn.Linear(WIDTH, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embeddings_norm(self.word_embeddings(idx) + self.position_embeddings(torch.arange(idx.shape[1])))
        x = self.encoder(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def test_bert_like_encoder_compares_its_first_and_last_layer():
    torch.manual_seed(0)
    model = TinyBert()
    probe = gw.GradientProbe(model)
    idx = torch.randint(0, VOCAB, (16, CONTEXT))
    F.cross_entropy(model(idx), torch.randint(0, 3, (16,))).backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    assert d.kind == "healthy", d.message
    assert d.compared == ("encoder.layers.0", "encoder.layers.5")
    layers = model.encoder.layers
    assert d.ratio == pytest.approx(plain_norm([layers[0]]) / plain_norm([layers[5]]), rel=1e-4)
    roles = dict(zip(stats.names, stats.roles, strict=True))
    assert roles["classifier"] == "head" and roles["pooler"] == "head" and roles["word_embeddings"] == "embedding"


def test_an_encoder_inside_a_sequential_compares_its_layers_not_the_sequential_slots():
    """``Sequential(Embedding, TransformerEncoder, Linear)``: rows are ``1.layers.3.linear1``; the stack is
    ``1.layers``, not the Sequential's slots ``0``/``1``/``2`` (which would make each linear map a block)."""
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, batch_first=True), 8)
    model = nn.Sequential(nn.Embedding(VOCAB, WIDTH), encoder, nn.Linear(WIDTH, VOCAB))
    probe = gw.GradientProbe(model)
    idx = torch.randint(0, VOCAB, (8, CONTEXT))
    F.cross_entropy(model(idx).reshape(-1, VOCAB), idx.reshape(-1)).backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    assert d.compared == ("1.layers.0", "1.layers.7"), d.message
    assert d.ratio == pytest.approx(plain_norm([encoder.layers[0]]) / plain_norm([encoder.layers[7]]), rel=1e-4)
    assert len(stats.block_indices()) == 8
    roles = dict(zip(stats.names, stats.roles, strict=True))
    assert roles["0"] == "embedding" and roles["2"] == "head"


def test_resnet_style_conv_net_compares_its_residual_blocks():
    torch.manual_seed(0)
    model = TinyResNet()
    probe = gw.GradientProbe(model)
    F.cross_entropy(model(torch.randn(16, 3, 16, 16)), torch.randint(0, 10, (16,))).backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    assert d.kind == "healthy", d.message
    assert d.compared == ("layer1.0", "layer4.1")
    assert d.ratio == pytest.approx(plain_norm([model.layer1[0]]) / plain_norm([model.layer4[1]]), rel=1e-4)
    assert len(stats.block_indices()) == 8 and stats.roles[stats.names.index("fc")] == "head"
    assert stats.blocks[stats.names.index("conv1")] == -1, "the stem is not a block"


# ------------------------------------------------------------------------------------------ torch's own RNNs
class Tagger(nn.Module):
    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def rnn_layer_norm(rnn: nn.RNNBase, suffix: str) -> float:
    params = [p for n, p in rnn.named_parameters() if n.endswith(suffix)]
    return math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in params))


def test_a_three_layer_torch_rnn_shows_its_depth():
    torch.manual_seed(0)
    rnn = nn.RNN(8, 32, num_layers=3, batch_first=True)
    probe = gw.GradientProbe(rnn)
    rnn(torch.randn(16, 12, 8))[0].pow(2).mean().backward()
    stats = probe.read()
    assert stats.names == ("l0", "l1", "l2")
    for i in range(3):
        assert stats.grad_norm[i] == pytest.approx(rnn_layer_norm(rnn, f"_l{i}"), rel=1e-5)
    d = gw.diagnose(stats)
    assert d.kind != "healthy" or (d.compared == ("l0", "l2") and math.isfinite(d.ratio))
    assert d.ratio == pytest.approx(stats.grad_norm[0] / stats.grad_norm[2])


def test_a_deep_rnn_stack_that_vanishes_with_depth_is_called_vanishing():
    torch.manual_seed(0)
    rnn = nn.RNN(16, 16, num_layers=12, batch_first=True)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            if name.startswith("weight_ih"):
                p.mul_(0.3)
    model = Tagger(rnn)
    probe = gw.GradientProbe(model)
    F.cross_entropy(model(torch.randn(32, 6, 16)), torch.randint(0, 2, (32,))).backward()
    d = gw.diagnose(probe.read())
    assert d.kind == "vanishing" and d.compared == ("rnn.l0", "rnn.l11"), d.message
    assert d.ratio == pytest.approx(rnn_layer_norm(rnn, "_l0") / rnn_layer_norm(rnn, "_l11"), rel=1e-4)


def test_bidirectional_lstm_gets_a_row_per_layer_and_direction():
    torch.manual_seed(0)
    model = Tagger(nn.LSTM(4, 16, num_layers=2, bidirectional=True, batch_first=True))
    probe = gw.GradientProbe(model)
    F.cross_entropy(model(torch.randn(8, 10, 4)), torch.randint(0, 2, (8,))).backward()
    stats = probe.read()
    assert stats.names == ("rnn.l0", "rnn.l0_reverse", "rnn.l1", "rnn.l1_reverse", "head")
    assert stats.blocks.tolist() == [0, 0, 1, 1, -1]
    for name in ("l0", "l0_reverse", "l1_reverse"):
        expected = rnn_layer_norm(model.rnn, f"_{name}")
        assert stats.grad_norm[stats.names.index(f"rnn.{name}")] == pytest.approx(expected, rel=1e-5)
    d = gw.diagnose(stats)
    assert d.compared == ("rnn.l0", "rnn.l1") and d.kind == "healthy", d.message
    assert stats.param_count.sum() == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ numerics
def test_fp16_gradients_of_norm_1e5_read_as_1e5_not_inf():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)).half()
    probe = gw.GradientProbe(model, detail_every=1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e5 / math.sqrt(p.numel() * 2) if p.dim() == 1 else 1e5 / 64)
    stats = probe.read()
    expected = [plain_norm([m]) for m in model]
    assert expected[0] > 1e5 and np.isfinite(stats.grad_norm).all()
    assert stats.grad_norm == pytest.approx(expected, rel=1e-6)
    assert stats.grad_mean_abs[0] == pytest.approx(
        float(sum(p.grad.double().abs().sum() for p in model[0].parameters()) / 4160), rel=1e-6
    )
    assert gw.diagnose(stats).kind == "exploding"  # a real 1e5, not "diverged"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_training_reads_to_float32_accuracy(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 4)).to(dtype)
    probe = gw.GradientProbe(model, detail_every=1)
    x = torch.randn(64, 32, dtype=dtype)
    F.cross_entropy(model(x).float(), torch.randint(0, 4, (64,))).backward()
    stats = probe.read()
    for i, index in enumerate((0, 2, 4)):
        assert stats.grad_norm[i] == pytest.approx(plain_norm([model[index]]), rel=1e-5)
        weights = torch.cat([p.detach().double().reshape(-1) for p in model[index].parameters()])
        assert stats.weight_norm[i] == pytest.approx(float(weights.norm()), rel=1e-5)
    assert stats.drift[0] == 0 and gw.diagnose(stats).kind == "healthy"


def test_bf16_autocast_with_grad_scaler_reads_unscaled_gradients():
    torch.manual_seed(0)
    model = tiny_gpt(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    probe = gw.GradientProbe(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lm_loss(model)
    scaler.scale(loss).backward()
    unscaled_before = probe.read(loss, scaler=scaler)
    scaled = probe.read(loss)  # the placement the issue saw: scaled gradients, "exploding"
    assert gw.diagnose(scaled).kind == "amp_unscaled"  # issue 19 item 8: named as the loss scale
    d = gw.diagnose(unscaled_before)
    assert d.kind == "healthy" and unscaled_before.grad_scale == scaler.get_scale() == 65536.0, d.message
    scaler.unscale_(optimizer)
    truth = [own_norm(model.get_submodule(n)) for n in unscaled_before.names]
    assert unscaled_before.grad_norm == pytest.approx(truth, rel=1e-5)
    after_unscale = probe.read(loss, scaler=scaler)  # unscale_ already divided: not divided twice
    assert after_unscale.grad_scale == 1.0 and after_unscale.grad_norm == pytest.approx(truth, rel=1e-5)
    scaler.step(optimizer)
    scaler.update()


def test_sparse_embedding_gradients_read_exactly():
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "emb": nn.Embedding(VOCAB, 8, sparse=True),
            "bag": nn.EmbeddingBag(VOCAB, 8, sparse=True),
            "out": nn.Linear(16, 2),
        }
    )
    probe = gw.GradientProbe(model, detail_every=1)
    idx = torch.randint(0, VOCAB, (6, 5))  # repeated indices: an uncoalesced gradient
    features = torch.cat([model["emb"](idx).mean(1), model["bag"](idx)], dim=1)
    model["out"](features).pow(2).sum().backward()
    assert model["emb"].weight.grad.is_sparse
    stats = probe.read()
    for name in ("emb", "bag"):
        dense = model[name].weight.grad.to_dense().double()
        i = stats.names.index(name)
        assert stats.grad_norm[i] == pytest.approx(float(dense.norm()), rel=1e-6)
        assert stats.grad_max_abs[i] == pytest.approx(float(dense.abs().max()), rel=1e-6)
        assert stats.grad_mean_abs[i] == pytest.approx(float(dense.abs().mean()), rel=1e-6)


def test_a_zero_size_parameter_reads_zero():
    class WithEmpty(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.empty = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(4, 0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.b(torch.tanh(self.a(x))), self.empty(x)], dim=1)

    model = WithEmpty()
    probe = gw.GradientProbe(model, detail_every=1)
    model(torch.randn(5, 4)).sum().backward()
    stats = probe.read()
    i = stats.names.index("empty")
    assert stats.grad_norm[i] == 0 and stats.grad_max_abs[i] == 0 and stats.param_count[i] == 0
    assert stats.grad_norm[stats.names.index("a")] == pytest.approx(plain_norm([model.a]), rel=1e-6)


# ------------------------------------------------------------------------------------------ changed models
def test_a_replaced_parameter_is_read_from_the_new_tensor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    probe = gw.GradientProbe(model, detail_every=1)
    model(torch.randn(4, 2)).sum().backward()
    probe.read()
    model[0].weight = nn.Parameter(torch.randn(8, 2))
    model.zero_grad()
    model(torch.randn(4, 2)).sum().backward()
    stats = probe.read()
    assert stats.grad_norm[0] == pytest.approx(plain_norm([model[0]]), rel=1e-6)
    assert stats.drift[0] == 0, "the new tensor's starting point is itself"
    assert gw.diagnose(stats).kind == "healthy"


def test_resized_embeddings_and_head_are_picked_up():
    """``resize_token_embeddings``: new, larger embedding and head modules after the probe was made."""
    torch.manual_seed(0)
    model = tiny_gpt(2)
    probe = gw.GradientProbe(model)
    lm_loss(model).backward()
    before = probe.read()
    model.wte = nn.Embedding(VOCAB + 14, WIDTH)
    model.lm_head = nn.Linear(WIDTH, VOCAB + 14, bias=False)
    model.lm_head.weight = model.wte.weight
    model.zero_grad()
    lm_loss(model).backward()
    stats = probe.read()
    assert stats.names == before.names
    i = stats.names.index("wte")
    assert stats.param_count[i] == (VOCAB + 14) * WIDTH
    assert stats.grad_norm[i] == pytest.approx(plain_norm([model.wte]), rel=1e-6)
    assert gw.diagnose(stats).kind == "healthy"


def test_a_parameter_resized_in_place_does_not_crash_the_detail_read():
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))
    probe = gw.GradientProbe(model, detail_every=1)
    with torch.no_grad():
        model[2].bias.data = torch.zeros(6)
        model[2].weight.data = torch.randn(6, 4)
    model(torch.randn(3, 2)).sum().backward()
    stats = probe.read()
    assert stats.param_count[1] == 30 and np.isnan(stats.drift[1])
    assert stats.grad_norm[1] == pytest.approx(plain_norm([model[2]]), rel=1e-6)


# ------------------------------------------------------------------------------------------ the right words
@pytest.mark.parametrize("set_to_none", [False, True])
def test_a_branch_unused_this_step_is_unused_not_dead(set_to_none):
    torch.manual_seed(0)
    model = Branchy("relu")
    probe = gw.GradientProbe(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(32, 4)
    verdicts = []
    for step in range(4):
        optimizer.zero_grad(set_to_none=set_to_none)
        model(x, use_aux=step % 2 == 0).pow(2).mean().backward()
        stats = probe.read()
        verdicts.append(gw.diagnose(stats))
        optimizer.step()
    assert verdicts[0].kind == "healthy" and verdicts[2].kind == "healthy", verdicts[0].message
    for d in verdicts[1], verdicts[3]:
        assert d.kind == "unused" and d.layers == ("aux",), d.message
        assert "had one at an earlier step" in d.message and "learning rate" not in d.fix.lower()
    assert not stats.has_grad[stats.names.index("aux")] and stats.had_grad[stats.names.index("aux")]


def test_reading_with_no_gradient_says_so_and_where_to_read():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    probe = gw.GradientProbe(model)
    d = gw.diagnose(probe.read())
    assert d.kind == "no_gradient" and "backward" in d.message and "after loss.backward()" in d.fix
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for set_to_none in (True, False):
        model(torch.randn(4, 2)).sum().backward()
        assert gw.diagnose(probe.read()).kind == "healthy"
        optimizer.zero_grad(set_to_none=set_to_none)
        stats = probe.read()
        assert gw.diagnose(stats).kind == "no_gradient" and not stats.has_grad.any()


def test_one_layer_is_not_healthy_it_is_inconclusive():
    model = nn.Linear(3, 2)
    probe = gw.GradientProbe(model)
    model(torch.randn(4, 3)).sum().backward()
    d = gw.diagnose(probe.read())
    assert d.kind == "inconclusive" and math.isnan(d.ratio) and d.compared == ()
    assert "Nothing to compare" in d.message


def test_reading_twice_without_a_new_backward_gives_the_same_verdict():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].bias.fill_(-100.0)  # layer 2 dead: exactly zero gradient, written by backward
    probe = gw.GradientProbe(model)
    model(torch.randn(16, 2)).pow(2).mean().backward()
    first, second = gw.diagnose(probe.read()), gw.diagnose(probe.read())
    assert first.kind == second.kind == "dead"


# ------------------------------------------------------------------------------------------ Hugging Face GPT-2
def test_hugging_face_gpt2_from_a_config():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=6, n_embd=128, n_head=4, vocab_size=100, n_positions=32)
    model = transformers.GPT2LMHeadModel(config)
    probe = gw.GradientProbe(model)
    idx = torch.randint(0, 100, (4, 32))
    model(idx, labels=idx).loss.backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    assert d.kind == "healthy", d.message
    assert d.compared == ("transformer.h.0", "transformer.h.5")
    assert "(h.0 vs h.5)" in d.message, d.message  # the verdict names blocks as the blocks view shows them
    assert "lm_head" in stats.aliases[stats.names.index("transformer.wte")]
    assert stats.param_count.sum() == sum(p.numel() for p in model.parameters())
    h = model.transformer.h
    assert d.ratio == pytest.approx(plain_norm([h[0]]) / plain_norm([h[5]]), rel=1e-4)
    model.resize_token_embeddings(120)
    model.zero_grad()
    model(idx, labels=idx).loss.backward()
    stats = probe.read()
    assert stats.param_count[stats.names.index("transformer.wte")] == 120 * 128


def test_float64_models_keep_their_range():
    """Underflow studies run in float64 (tutorial 05): norms far below float32's range must not become 0."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)).double()
    probe = gw.GradientProbe(model, detail_every=1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-60)
    stats = probe.read()
    assert stats.grad_norm[0] == pytest.approx(1e-60 * math.sqrt(20), rel=1e-9)
    assert stats.grad_max_abs[0] == pytest.approx(1e-60, rel=1e-12)


def test_flow_order_is_taken_when_only_submodules_are_called():
    torch.manual_seed(0)
    model = HeadFirst()
    probe = gw.GradientProbe(model)
    out = model.head(model.body(torch.randn(8, WIDTH)))  # the wrapper itself never runs
    out.sum().backward()
    stats = probe.read()
    assert stats.names[0] == "body.0" and stats.names[-1] == "head"
    assert not model.head._forward_pre_hooks, "the hooks are gone after the read"
