"""Small networks for the embedded datasets."""

from __future__ import annotations

import torch
from torch import nn

from fairsweep.models import register_model
from fairsweep.models.layers import InputScale, conv_bn
from fairsweep.models.sites import relu_site


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks with one 2× pooling; 4,096 ReLUs at 8×8 with width 16."""

    def __init__(self, num_classes: int, in_channels: int, width: int, resolution: float) -> None:
        super().__init__()
        w = width
        self.resample = InputScale(resolution)
        self.block1 = nn.Sequential(*conv_bn(in_channels, w))
        self.relu1 = relu_site()
        self.block2 = nn.Sequential(*conv_bn(w, 2 * w))
        self.relu2 = relu_site()
        self.pool = nn.MaxPool2d(2)
        self.block3 = nn.Sequential(*conv_bn(2 * w, 4 * w))
        self.relu3 = relu_site()
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.block1(self.resample(x)))
        x = self.pool(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        return self.head(x.mean(dim=(2, 3)))


class MLP(nn.Module):
    """Two hidden ReLU layers on flat features (the paper's Figure 2 model)."""

    def __init__(self, num_classes: int, in_features: int, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, width)
        self.relu1 = relu_site()
        self.fc2 = nn.Linear(width, width)
        self.relu2 = relu_site()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.head(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


@register_model
def small_cnn(num_classes: int, in_channels: int = 1, width: int = 16, resolution: float = 1.0) -> nn.Module:
    return SmallCNN(num_classes, in_channels, width, resolution)


@register_model
def mlp(num_classes: int, in_channels: int = 2, width: int = 32) -> nn.Module:
    return MLP(num_classes, in_channels, width)
