"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairsweep.models.sites import relu_site


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """3×3 convolution (no bias) and batch norm."""
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]


class ConvBN(nn.Module):
    """3×3 convolution and batch norm, no activation (the stem of the SNL authors' ResNet)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv, self.bn = conv_bn(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ConvBNReLU(ConvBN):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out)
        self.relu = relu_site()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(super().forward(x))


def classifier(channels: int, num_classes: int) -> list[tuple[str, nn.Module]]:
    """Global average pooling and one linear layer, as named modules: any input size works."""
    return [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("head", nn.Linear(channels, num_classes))]


class InputScale(nn.Module):
    """Scales the input's resolution by `factor` (DeepReDuce's ρ) by area averaging, inside the model,
    so the data pipeline stays the same and ReLU counts follow the reduced resolution."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        if not 0 < factor <= 1:
            raise ValueError(f"resolution factor must be in (0, 1], got {factor}")
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1.0:
            return x
        height, width = x.shape[-2:]
        size = (height * self.factor, width * self.factor)
        if any(s != int(s) or s < 1 for s in size):
            raise ValueError(f"resolution factor {self.factor} does not divide a {height}×{width} input "
                             "into whole pixels")
        return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="area")  # (N, C, ρH, ρW)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
