"""VGG-19 with batch norm for 32×32-and-up inputs: five stages of 3×3 conv-BN-ReLU, each ending in a
2× max-pool, then global average pooling and one linear classifier."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from fairsweep.models import register_model
from fairsweep.models.layers import ConvBNReLU, InputScale, classifier

VGG19_STAGES = ((1, 2), (2, 2), (4, 4), (8, 4), (8, 4))  # (channels as a multiple of `width`, convs)


@register_model
def vgg19(num_classes: int, in_channels: int = 3, width: int = 64, resolution: float = 1.0) -> nn.Module:
    layers: list[tuple[str, nn.Module]] = [("resample", InputScale(resolution))]
    c_in = in_channels
    for i, (multiple, convs) in enumerate(VGG19_STAGES):
        c_out = multiple * width
        units = [ConvBNReLU(c_in if j == 0 else c_out, c_out) for j in range(convs)]
        layers.append((f"stage{i + 1}", nn.Sequential(*units, nn.MaxPool2d(2))))
        c_in = c_out
    layers += classifier(c_in, num_classes)
    return nn.Sequential(OrderedDict(layers))
