"""CIFAR-style residual networks: ResNet-18/34 (3×3 stem, no max-pool) and the pre-activation
wide ResNet WRN-22-8.

Each network is a sequence of named top-level modules (`stem`, `stage1`, …), so a ReLU site's
name says its stage (`stage2.1.relu2`). `width` is the channel count of the first stage and
`resolution` DeepReDuce's input-resolution factor ρ. `stem_relu=False` gives the SNL authors'
ResNet (`ResNet_IN`), whose stem is conv + BN with no ReLU: 491,520 ReLUs for ResNet-18 and 901,120
for ResNet-34 at 32×32, the counts the paper's budgets are fractions of (557,056 and 966,656 with it).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fairsweep.models import register_model
from fairsweep.models.layers import ConvBN, ConvBNReLU, InputScale, classifier, conv_bn
from fairsweep.models.sites import relu_site


class BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, add the shortcut, ReLU (the residual ReLU that thinning drops)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, c_out, stride)
        self.relu1 = relu_site()
        self.conv2, self.bn2 = conv_bn(c_out, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = relu_site(residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU (on the residual stream, the ReLU thinning drops), conv, BN-ReLU, conv, add."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = relu_site(residual=True)
        self.conv1, self.bn2 = conv_bn(c_in, c_out, stride)
        self.relu2 = relu_site()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        # as in the reference WRN, a projection shortcut takes the activated input
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return out + (x if self.shortcut is None else self.shortcut(act))


class FinalActivation(nn.Module):
    """The pre-activation network's last BN-ReLU, before pooling."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.relu = relu_site()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(x))


def _stages(block: type[nn.Module], c_in: int, widths: list[int], depths: list[int]) -> list[tuple[str, nn.Module]]:
    """`stage1`… of `depths[i]` blocks each; every stage after the first halves the resolution."""
    stages = []
    for i, (c_out, depth) in enumerate(zip(widths, depths)):
        blocks = [block(c_in if j == 0 else c_out, c_out, 2 if i > 0 and j == 0 else 1) for j in range(depth)]
        stages.append((f"stage{i + 1}", nn.Sequential(*blocks)))
        c_in = c_out
    return stages


def resnet(depths: list[int], num_classes: int, in_channels: int, width: int, resolution: float,
           stem_relu: bool = True) -> nn.Sequential:
    widths = [width * 2 ** i for i in range(len(depths))]
    return nn.Sequential(OrderedDict([
        ("resample", InputScale(resolution)),
        ("stem", (ConvBNReLU if stem_relu else ConvBN)(in_channels, width)),
        *_stages(BasicBlock, width, widths, depths),
        *classifier(widths[-1], num_classes),
    ]))


def wide_resnet(depth: int, num_classes: int, in_channels: int, width: int, resolution: float) -> nn.Sequential:
    """WRN-depth-k with first-stage width 16·k = `width`; (depth − 4) / 6 blocks per stage."""
    blocks = (depth - 4) // 6
    widths = [width, 2 * width, 4 * width]
    stem_channels = 16
    return nn.Sequential(OrderedDict([
        ("resample", InputScale(resolution)),
        ("stem", nn.Conv2d(in_channels, stem_channels, 3, padding=1, bias=False)),
        *_stages(PreActBlock, stem_channels, widths, [blocks] * 3),
        ("final", FinalActivation(widths[-1])),
        *classifier(widths[-1], num_classes),
    ]))


@register_model
def resnet18(num_classes: int, in_channels: int = 3, width: int = 64, resolution: float = 1.0,
             stem_relu: bool = True) -> nn.Module:
    return resnet([2, 2, 2, 2], num_classes, in_channels, width, resolution, stem_relu)


@register_model
def resnet34(num_classes: int, in_channels: int = 3, width: int = 64, resolution: float = 1.0,
             stem_relu: bool = True) -> nn.Module:
    return resnet([3, 4, 6, 3], num_classes, in_channels, width, resolution, stem_relu)


@register_model
def wrn22_8(num_classes: int, in_channels: int = 3, width: int = 128, resolution: float = 1.0) -> nn.Module:
    return wide_resnet(22, num_classes, in_channels, width, resolution)
