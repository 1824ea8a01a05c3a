"""Family 4: ResNet-style nets written out (torchvision is not imported): basic-block ResNet-18 layout and the
ResNet-50 bottleneck layout (3-4-6-3), narrow, on 16x16 images, with and without ``zero_init_residual``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import common as c

FAMILY = "ResNet (written out)"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, bn: bool) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(width) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=not bn)
        self.bn2 = nn.BatchNorm2d(out) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.down = _shortcut(cin, out, stride, bn)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.down(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, bn: bool) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(width) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=not bn)
        self.bn2 = nn.BatchNorm2d(width) if bn else nn.Identity()
        self.conv3 = nn.Conv2d(width, out, 1, bias=not bn)
        self.bn3 = nn.BatchNorm2d(out) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.down = _shortcut(cin, out, stride, bn)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + self.down(x))


def _shortcut(cin: int, out: int, stride: int, bn: bool) -> nn.Module:
    if stride == 1 and cin == out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=not bn), nn.BatchNorm2d(out) if bn else nn.Identity())


class ResNet(nn.Module):
    """torchvision's layout: stem conv1 + bn1, four stages, average pool, fc (optionally a hidden fc first)."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        base: int = 8,
        classes: int = 4,
        bn: bool = True,
        zero_init_residual: bool = False,
        hidden_head: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 3, 1, 1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(base) if bn else nn.Identity()
        self.relu = nn.ReLU()
        cin, stages = base, []
        for i, count in enumerate(layers):
            width = base * 2**i
            blocks = []
            for j in range(count):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1, bn))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(cin, 32) if hidden_head else None
        self.head_act = nn.ReLU() if hidden_head else None
        self.fc = nn.Linear(32 if hidden_head else cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual and bn:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_norm().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.pool(x), 1)
        if self.hidden is not None:
            x = self.head_act(self.hidden(x))
        return self.fc(x)


def resnet18(**kw: Any) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet50(**kw: Any) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], **kw)


class PlainCNN(nn.Module):
    """A deep conv stack with no skip connection and no normalization (the pre-ResNet failure)."""

    def __init__(self, depth: int, act: type[nn.Module], width: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), act()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), act()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _scaled(model: nn.Module, factor: float) -> nn.Module:
    """Every conv and linear weight times ``factor`` (an init "a bit larger than He"): without BatchNorm each
    residual stage multiplies the signal and the gradient."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.mul_(factor)
    return model


def _dead_head(model: ResNet) -> ResNet:
    with torch.no_grad():
        model.hidden.bias.fill_(-20.0)
    return model


def _freeze_backbone(model: ResNet) -> ResNet:
    for name, p in model.named_parameters():
        if not name.startswith(("layer4", "fc")):
            p.requires_grad_(False)
    return model


def programs() -> list:
    def P(name: str, make: Any, labels: tuple[str, str], check: c.Check, batch: int = 8, **kw: Any) -> Any:
        kw.setdefault("lr", 3e-3)
        kw.setdefault("steps", 40)
        return c.program(name, FAMILY, lambda f, i, o: make(f), labels, check, data="images", batch=batch, **kw)

    H = ("healthy", "healthy")
    return [
        # ---- healthy (including by-design zeros and the small-batch stem of case 3)
        P("resnet/r18-b8", lambda f: resnet18(), H, c.healthy()),
        P("resnet/r18-zero-init-b8", lambda f: resnet18(zero_init_residual=True), H, c.healthy(), case=4),
        P("resnet/r18-b4-sgd", lambda f: resnet18(), H, c.healthy(), batch=4, optimizer="sgd", lr=0.02, steps=60),
        P("resnet/r50-b4", lambda f: resnet50(), H, c.healthy(0.9), batch=4, steps=80, case=3),
        P("resnet/r50-zero-init-b4", lambda f: resnet50(zero_init_residual=True), H, c.healthy(), batch=4, steps=60,
          case=3),
        P("resnet/r50-b16", lambda f: resnet50(), H, c.healthy(), batch=16),
        P("resnet/r50-zero-init-b16-sgd", lambda f: resnet50(zero_init_residual=True), H, c.healthy(), batch=16,
          optimizer="sgd", lr=0.05, case=4),
        # ---- faults
        P("resnet/plain-sigmoid-cnn-d12", lambda f: resnet18() if f else PlainCNN(12, nn.Sigmoid),
          ("vanishing", "vanishing"), c.vanishing(c.LN4), batch=16, optimizer="sgd", lr=0.05, steps=60),
        P("resnet/r18-no-bn-init-x2-clip", lambda f: resnet18(bn=False) if f else _scaled(resnet18(bn=False), 2.0),
          ("exploding", "exploding"), c.exploding(), optimizer="sgd", lr=0.01, clip=1.0),
        P("resnet/r18-sgd-lr", lambda f: resnet18(), ("diverging", "diverging"), c.diverging(), optimizer="sgd",
          lr=50.0, fixed={"lr": 0.02}),
        P("resnet/r18-dead-hidden-head", lambda f: _dead_head(resnet18(hidden_head=True)), ("dead", "dead"),
          c.dead(), watch_layer="head_act"),
        P("resnet/r18-frozen-backbone", lambda f: _freeze_backbone(resnet18()), ("frozen", "frozen"), c.frozen(0.9),
          lr=1e-2),
        P("resnet/r18-sgd-lr1e-6", lambda f: resnet18(), ("lr_too_small", "lr_too_small"), c.lr_too_small(),
          batch=32, optimizer="sgd", lr=1e-6, momentum=0.0, fixed={"lr": 0.02}),
        P("resnet/r18-amp-unscaled", lambda f: resnet18(), ("amp_unscaled", "amp_unscaled"), c.amp_unscaled(),
          mode="amp_unscaled", case=8),
        P("resnet/r50-micro-batch-b4", lambda f: resnet50(), ("micro_batch", "micro_batch"), c.micro_batch(),
          batch=4, mode="micro_batch", steps=40, case=9),
        P("resnet/r18-zero-grad-end", lambda f: resnet18(), ("no_gradient", "no_gradient"), c.no_gradient(),
          mode="zero_grad_end", case=11),
    ]
