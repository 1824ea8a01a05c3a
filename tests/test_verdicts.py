"""Issue 19's "What was seen" items 1-13: one test each, on models this project did not write (plain torch
modules, stock layers, tiny Hugging Face configs where transformers is installed). Each failed on the code
before the fix."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradwidgets as gw


def _deep_tiny_chain(depth: int = 24, width: int = 16, scale: float = 0.05) -> nn.Sequential:
    """A chain of blocks (Linear + tanh, no residual, no norm) whose small weights shrink the gradient ~20x per
    block: the first blocks' entries fall below float32's squaring range (~1e-19) but not to zero."""
    torch.manual_seed(0)
    blocks = []
    for _ in range(depth):
        block = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
        for layer in (block[0], block[2]):
            nn.init.normal_(layer.weight, std=scale)
        blocks.append(block)
    return nn.Sequential(*blocks, nn.Linear(width, 2))


def test_item_1_tiny_gradients_read_their_value_not_zero():
    model = _deep_tiny_chain()
    probe = gw.GradientProbe(model)
    x = torch.randn(32, 16)
    F.cross_entropy(model(x), torch.randint(0, 2, (32,))).backward()
    stats = probe.read()
    first = dict(model.named_modules())["0.0"]
    exact = float(first.weight.grad.double().square().sum() + first.bias.grad.double().square().sum()) ** 0.5
    assert 0 < exact < 1e-19, "the case needs entries below float32's squaring range"
    assert float(torch.linalg.vector_norm(first.weight.grad)) == 0, "float32 squares underflow here"
    row = stats.names.index("0.0")
    assert stats.grad_norm[row] == pytest.approx(exact, rel=1e-5)
    # an independent float64 norm for every row: nothing reads 0 that holds a nonzero entry
    modules = dict(model.named_modules())
    for name, value in zip(stats.names, stats.grad_norm, strict=True):
        grads = [p.grad.double() for p in modules[name].parameters(recurse=False)]
        independent = float(sum(g.square().sum() for g in grads)) ** 0.5
        assert value == pytest.approx(independent, rel=1e-5), name
    d = gw.diagnose(stats)
    assert d.kind == "vanishing" and "exactly zero" not in d.message


# ------------------------------------------------------------------------------ item 2: one ratio per stack
def _without_residual(layer: nn.Module) -> None:
    """Take a Hugging Face T5 sub-layer's residual out: its output minus its input is the branch alone (autograd
    cancels the identity path exactly)."""
    forward = layer.forward

    def branch_only(hidden_states, *args, **kwargs):
        out = forward(hidden_states, *args, **kwargs)
        if isinstance(out, tuple):
            return (out[0] - hidden_states, *out[1:])
        return out - hidden_states

    layer.forward = branch_only


def test_item_2_t5_ratio_is_formed_within_the_decoder():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=64,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=6,
        num_decoder_layers=6,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    model = transformers.T5ForConditionalGeneration(config)
    for block in model.decoder.block:
        for layer in block.layer:
            _without_residual(layer)
    probe = gw.GradientProbe(model)
    ids = torch.randint(1, 64, (4, 10))
    model(input_ids=ids, labels=ids).loss.backward()
    stats = probe.read()
    d = gw.diagnose(stats)
    norms = dict(zip(stats.block_names(), stats.block_grad_norm(), strict=True))
    within = norms["decoder.block.0"] / norms["decoder.block.5"]
    assert within < 1e-3, "the case: the decoder vanishes within itself"
    assert d.kind == "vanishing", d.message
    assert d.stack == "decoder.block" and d.compared == ("decoder.block.0", "decoder.block.5")
    assert d.ratio == pytest.approx(within, rel=1e-6)
    assert "decoder.block" in d.message


# ------------------------------------------------------------------------ items 3, 4: ResNet-50 bottlenecks
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, zero_init: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        if zero_init:
            nn.init.zeros_(self.bn3.weight)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout written out ([3, 4, 6, 3] bottlenecks, widths 64-512 x 4)."""

    def __init__(self, classes: int = 10, zero_init_residual: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes, stages = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = [Bottleneck(inplanes, planes, stride, zero_init_residual)]
            inplanes = planes * 4
            layers += [Bottleneck(inplanes, planes, 1, zero_init_residual) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(2048, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@functools.lru_cache(maxsize=1)
def _resnet50() -> ResNet50:
    torch.manual_seed(0)
    return ResNet50()


def _resnet_stats(zero_init_residual: bool, batch: int = 4, size: int = 64):
    """A ResNet-50 read at init on a batch of ``batch`` ``size`` x ``size`` images (built once per session)."""
    model = copy.deepcopy(_resnet50())
    if zero_init_residual:
        for block in model.modules():
            if isinstance(block, Bottleneck):
                nn.init.zeros_(block.bn3.weight)
    probe = gw.GradientProbe(model)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    F.cross_entropy(model(x), y).backward()
    return model, probe.read()


def test_item_3_a_stock_resnet50_stem_is_not_an_explosion_and_an_absolute_check_names_its_layer():
    _, stats = _resnet_stats(False)
    stem = stats.grad_norm[stats.names.index("conv1")]
    assert stem > 1e3 and stats.blocks[stats.names.index("conv1")] == -1, "the case: the stem above 1e3"
    d = gw.diagnose(stats)
    assert d.kind not in ("exploding", "amp_unscaled"), d.message
    # an absolute explosion inside the body is named by its layer
    grad = stats.grad_norm.copy()
    row = stats.names.index("layer3.2.conv2")
    grad[row] = 1e6
    d = gw.diagnose(dataclasses.replace(stats, grad_norm=grad))
    assert d.kind == "exploding" and "layer3.2.conv2" in d.message and "layer3.2.conv2" in d.layers


def test_item_4_zero_init_residual_is_not_dead():
    _, stats = _resnet_stats(True)
    zero = [n for n, g in zip(stats.names, stats.grad_norm, strict=True) if g == 0]
    assert "layer1.0.conv1" in zero, "the case: the zero-initialised branches get exactly zero gradient"
    d = gw.diagnose(stats)
    assert d.kind != "dead", d.message


class LoRALinear(nn.Module):
    """A LoRA adapter (Hu et al. 2021) on a frozen linear map: ``W x + B A x``, B zero-initialised."""

    def __init__(self, base: nn.Linear, rank: int = 4) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x))


def test_item_4_lora_b_zero_at_step_0_is_frozen_by_design_not_dead():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    for p in backbone.parameters():
        p.requires_grad_(False)
    for i in (0, 2):
        backbone[i] = LoRALinear(backbone[i])
    probe = gw.GradientProbe(backbone)
    F.cross_entropy(backbone(torch.randn(16, 16)), torch.randint(0, 4, (16,))).backward()
    stats = probe.read()
    assert stats.grad_norm[stats.names.index("0.lora_A")] == 0, "the case: B = 0 leaves A without gradient"
    d = gw.diagnose(stats)
    assert d.kind == "frozen", d.message
    assert "by design" in d.message


# ------------------------------------------------------------------------------------- item 5: partial death
def test_item_5_a_mostly_dead_last_hidden_layer_is_dead_with_its_fraction():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 2)
    )
    with torch.no_grad():
        model[4].bias[:98] = -20.0
    probe = gw.GradientProbe(model)
    x = torch.randn(64, 2)
    F.cross_entropy(model(x), torch.randint(0, 2, (64,))).backward()
    stats = probe.read()
    independent = float((model[4].weight.grad.abs().amax(1) == 0).float().mean())
    assert independent >= 0.98
    d = gw.diagnose(stats)
    shown = gw.core.diagnosis.format_number(100 * independent) + "%"
    assert d.kind == "dead" and shown in d.message and "4" in d.layers, d.message


# ------------------------------------------------------------------- item 6: thresholds and words agree
def test_item_6_deep_relu_batchnorm_explodes_and_its_fix_is_a_skip_connection_not_the_learning_rate():
    cfg = gw.NetConfig(depth=40, norm="batch", norm_position="post", init="kaiming")
    torch.manual_seed(0)
    data = gw.make_dataset("moons", n_samples=256, seed=0)
    model = gw.build_model(cfg, data.in_features, data.out_features)
    probe = gw.GradientProbe(model)
    F.cross_entropy(model(data.x_train[:128]), data.y_train[:128]).backward()
    d = gw.diagnose(probe.read(), config=cfg)
    assert d.kind == "exploding" and d.ratio > gw.core.diagnosis.EXPLODING_RATIO, d.message
    assert "skip connection" in d.fix and "lower the learning rate" not in d.fix.lower()


def test_item_6_the_explain_text_states_the_thresholds_the_code_uses():
    from gradwidgets.core import diagnosis
    from gradwidgets.dashboard import page

    text = " ".join(page.EXPLANATION.split())
    assert diagnosis.VANISHING_RATIO == 1e-3 and "Below 10<sup>-3</sup> is vanishing" in text
    assert diagnosis.EXPLODING_RATIO == 1e3 and "Above 10<sup>3</sup> is exploding" in text
    assert "Far above 1 is exploding" not in text


# ------------------------------------------------ item 7: residual removed, LayerNorm kept: over time
def _post_ln_without_residual(layer: nn.TransformerEncoderLayer) -> None:
    def forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = layer.norm1(layer._sa_block(src, src_mask, src_key_padding_mask, is_causal=is_causal))
        return layer.norm2(layer._ff_block(x))

    layer.forward = forward


class TokenModel(nn.Module):
    def __init__(self, depth: int, width: int = 32, vocab: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        for block in self.encoder.layers:
            _post_ln_without_residual(block)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


def test_item_7_layernorm_without_residual_is_reported_over_time():
    torch.manual_seed(0)
    model = TokenModel(depth=24)
    probe = gw.GradientProbe(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = None
    for step in range(1, 26):
        tokens = torch.randint(0, 16, (16, 8))
        loss = F.cross_entropy(model(tokens).flatten(0, 1), ((3 * tokens + 1) % 16).flatten())
        loss.backward()
        stats = probe.read(loss, step=step)
        history = history or gw.History(capacity=100, names=stats.names)
        history.append(stats)
        opt.step()
        opt.zero_grad()
    assert history.loss[-5:].mean() > 0.99 * np.log(16), "the case: the loss stays at chance (ln 16)"
    d = gw.diagnose(stats, history=history, optimizer=opt)
    assert d.kind == "vanishing", d.message
    assert "ActivationStats" in d.fix


# -------------------------------------------------------------------------- item 8: AMP scale left in
def test_item_8_gradients_read_without_the_scaler_are_named_as_the_loss_scale():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    probe = gw.GradientProbe(model)
    loss = F.cross_entropy(model(torch.randn(64, 2)), torch.randint(0, 2, (64,)))
    scaler.scale(loss).backward()
    unscaled = probe.read(loss, scaler=scaler)
    scaled = probe.read(loss)
    assert np.allclose(scaled.grad_norm, unscaled.grad_norm * 2**16)
    d = gw.diagnose(scaled)
    assert d.kind == "amp_unscaled" and "scaler=scaler" in d.fix, d.message
    assert gw.diagnose(unscaled).kind == "healthy"


# --------------------------------------------------------------------------- item 9: micro-batch reads
def test_item_9_reads_between_micro_batches_are_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = gw.GradientProbe(model)
    kinds = []
    for _ in range(2):  # two optimizer steps of 4 micro-batches, read after each micro-batch
        for _ in range(4):
            (F.cross_entropy(model(torch.randn(8, 2)), torch.randint(0, 2, (8,))) / 4).backward()
            kinds.append(gw.diagnose(probe.read()).kind)
        opt.step()
        opt.zero_grad()
    assert kinds == ["healthy", "micro_batch", "micro_batch", "micro_batch"] * 2


# ------------------------------------------------------------------------------- item 10: Adam's eps
def test_item_10_adam_eps_above_the_gradient_is_named_eps_limited():
    cfg = gw.NetConfig(depth=11, activation="sigmoid", width=64)
    torch.manual_seed(0)
    data = gw.make_dataset("moons", n_samples=256, seed=0)
    model = gw.build_model(cfg, data.in_features, data.out_features)
    probe = gw.GradientProbe(model)
    F.cross_entropy(model(data.x_train[:64]), data.y_train[:64]).backward()
    stats = probe.read()
    first = stats.grad_norm[0] / np.sqrt(stats.param_count[0])
    assert first < 1e-8, "the case: first-layer gradient RMS below Adam's eps"
    d = gw.diagnose(stats, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-8))
    assert d.kind == "eps_limited" and "eps=1e-08" in d.message, d.message
    assert any(name.startswith("blocks.0.") for name in d.layers) and not any("blocks.9." in n for n in d.layers)
    d = gw.diagnose(stats, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3, eps=1e-30))
    assert d.kind == "vanishing"
    assert gw.diagnose(stats).kind == "vanishing", "without an optimizer, as before"


# ---------------------------------------------------------------------- item 12: torch.compile'd models
def test_item_12_a_compiled_models_rows_carry_the_models_own_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    compiled = torch.compile(model, backend="eager")
    probe = gw.GradientProbe(compiled)
    F.cross_entropy(compiled(torch.randn(8, 2)), torch.randint(0, 2, (8,))).backward()
    stats = probe.read()
    assert stats.names == ("0", "2", "4")
    assert stats.grad_norm[1] == pytest.approx(
        float(torch.cat([model[2].weight.grad.flatten(), model[2].bias.grad]).norm()), rel=1e-5
    )


# --------------------------------------------------- item 11: the monitor's last frame, zero_grad at the end
@pytest.mark.parametrize("set_to_none", [True, False])
def test_item_11_with_the_optimizer_the_monitor_reads_at_step_wherever_zero_grad_sits(set_to_none):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = gw.GradientMonitor(model, optimizer=opt, fps=30.0, budget=1.0)
    try:
        norms, losses = [], []
        for _ in range(12):
            loss = F.cross_entropy(model(torch.randn(32, 2)), torch.randint(0, 2, (32,)))
            loss.backward()
            norms.append(float(torch.cat([p.grad.flatten() for p in model[0].parameters()]).norm()))
            losses.append(float(loss))
            opt.step()
            opt.zero_grad(set_to_none=set_to_none)  # at the end of the body, before the monitor's call
            monitor.update(loss)
            time.sleep(0.05)  # slower than the 30 fps cap: every step is due for a read
        assert monitor.flush(timeout=10)
        time.sleep(0.5)  # past the idle time after which the drawing thread reads a step left unread
        assert monitor.flush(timeout=10)
        assert monitor.error is None
        stats, d = monitor.stats, monitor.diagnosis
        assert stats.step == 12 and d.kind == "healthy", d.message
        assert stats.grad_norm[0] == pytest.approx(norms[-1], rel=1e-5)
        assert math.isnan(stats.loss) or stats.loss == pytest.approx(losses[-1], rel=1e-6), "never another step's"
    finally:
        monitor.close()


# ------------------------------------------------------------ item 13: verdicts that contradict their number
def _relu_mlp(depth: int = 12, width: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(2, width), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 2))


def test_item_13_a_layer_that_moved_598_percent_did_learn():
    torch.manual_seed(0)
    model = _relu_mlp()
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
    probe = gw.GradientProbe(model)
    F.cross_entropy(model(torch.randn(64, 2)), torch.randint(0, 2, (64,))).backward()
    stats = probe.read()
    drift = np.full(len(stats), 5.98)
    drift[3] = 6.0e3  # one layer moved 6000x, the others 598%: they all learned
    d = gw.diagnose(dataclasses.replace(stats, drift=drift), steps=31)
    assert "never learned" not in d.message, d.message
    drift[:] = 0.5
    drift[[1, 2]] = 1e-5  # these two barely moved while the others moved 50%: they never learned
    d = gw.diagnose(dataclasses.replace(stats, drift=drift), steps=31)
    assert d.kind == "dead" and "never learned" in d.message and d.layers == ("2", "4"), d.message


def test_item_13_a_sequential_models_verdict_names_layers_as_the_bars_number_them():
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(11) for m in (nn.LazyLinear(32), nn.Sigmoid())], nn.LazyLinear(2))
    model(torch.randn(2, 2))
    probe = gw.GradientProbe(model)
    F.cross_entropy(model(torch.randn(64, 2)), torch.randint(0, 2, (64,))).backward()
    stats = probe.read()
    assert len(stats) == 12 and stats.names[0] == "0" and stats.names[10] == "20"
    d = gw.diagnose(stats)
    assert d.kind == "vanishing" and d.compared == ("0", "20")
    assert "(layer 1 (0) vs layer 11 (20))" in d.message, d.message


def test_item_11_with_the_optimizer_the_logger_reads_at_step_wherever_zero_grad_sits(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    norms = []
    with gw.GradientLogger(model, tmp_path / "run.gwrun", every=5, optimizer=opt) as logger:
        for _ in range(10):
            loss = F.cross_entropy(model(torch.randn(32, 2)), torch.randint(0, 2, (32,)))
            loss.backward()
            norms.append(float(torch.cat([p.grad.flatten() for p in model[0].parameters()]).norm()))
            opt.step()
            opt.zero_grad(set_to_none=False)
            logger.log(loss)  # after zero_grad: without the optimizer this read zeros
        assert logger.stats.step == 10 and logger.diagnosis.kind == "healthy", logger.diagnosis.message
        assert logger.stats.grad_norm[0] == pytest.approx(norms[-1], rel=1e-5)
    run = gw.load_run(tmp_path / "run.gwrun")
    assert list(run.steps) == [1, 5, 10]
    opt.step()  # the hook is gone once the logger is closed
