"""Model registry: `@register_model` on a factory, `create_model(name, ...)`, `list_models()`.

Every factory takes `num_classes`, `in_channels` and `width` (channels of its first stage, or hidden
units); convolutional ones also take `resolution`, DeepReDuce's input-resolution factor ρ, and the
ResNets `stem_relu` (whether a ReLU follows the stem).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from fairsweep.errors import STEM_RELU_NOT_TAKEN
from fairsweep.models.sites import ReLUSite, relu_site, relu_sites, stage_of
from fairsweep.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("architecture")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory under its function name: `@register_model def resnet18(num_classes, ...)`."""
    return MODELS.add(fn.__name__, fn)


list_models = MODELS.names


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)


def default_width(name: str) -> int:
    """The `width` an architecture has when none is given (e.g. 64 for ResNet-18)."""
    return inspect.signature(MODELS.get(name)).parameters["width"].default


def architectures_taking(option: str) -> list[str]:
    """The registered architectures whose factory takes the keyword `option` (e.g. `stem_relu`)."""
    return [name for name in list_models() if option in inspect.signature(MODELS.get(name)).parameters]


def stem_relu_problem(name: str, key: str, value: str) -> str | None:
    """Why `stem_relu`, given as `key` (a spec key or a flag) with `value`, cannot be set for architecture
    `name`, or None."""
    takes = architectures_taking("stem_relu")
    if name in takes:
        return None
    return STEM_RELU_NOT_TAKEN.format(key=key, value=value, arch=name, takes=", ".join(takes))


def input_problem(name: str, input_shape: tuple[int, ...], **kwargs) -> str | None:
    """Why architecture `name` (built with `kwargs`) cannot take one input of `input_shape`, or None.

    Runs on the meta device: shapes are checked, nothing is computed.
    """
    try:
        with torch.device("meta"):
            model = create_model(name, num_classes=2, in_channels=input_shape[0], **kwargs).eval()
            model(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        lines = str(exc).strip().splitlines()
        return lines[0].rstrip(".") if lines else type(exc).__name__  # the message adds its own period
    return None


# Register the architectures.
from fairsweep.models import resnet as _resnet  # noqa: E402,F401
from fairsweep.models import small as _small  # noqa: E402,F401
from fairsweep.models import vgg as _vgg  # noqa: E402,F401

__all__ = ["ReLUSite", "architectures_taking", "create_model", "default_width", "input_problem", "list_models",
           "register_model", "relu_site", "relu_sites", "stage_of", "stem_relu_problem"]
