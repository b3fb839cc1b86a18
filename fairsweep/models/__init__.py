"""Model registry: `@register_model` on a factory, `create_model(name, ...)`, `list_models()`.

Every factory takes `num_classes`, `in_channels` and `width` (channels of its first stage, or hidden
units); convolutional ones also take `resolution`, DeepReDuce's input-resolution factor ρ, and the
ResNets `stem_relu` (whether a ReLU follows the stem).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


def takes_option(name: str, option: str) -> bool:
    """Whether architecture `name`'s factory takes the argument `option` (e.g. `stem_relu`)."""
    return option in inspect.signature(MODELS.get(name)).parameters


@dataclass(frozen=True)
class ModelArgs:
    """Everything `create_model` needs to build one model: stored with each stage, so that any stored
    model can be rebuilt without knowing how its stage made it (a DeepReDuce model's own width and
    resolution included)."""

    arch: str
    num_classes: int
    in_channels: int
    options: dict[str, Any] = field(default_factory=dict)  # the factory's other arguments that were set

    def build(self) -> nn.Module:
        return create_model(self.arch, num_classes=self.num_classes, in_channels=self.in_channels, **self.options)

    def with_options(self, **options: Any) -> ModelArgs:
        return ModelArgs(self.arch, self.num_classes, self.in_channels, {**self.options, **options})

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "num_classes": self.num_classes, "in_channels": self.in_channels,
                "options": dict(self.options)}

    @classmethod
    def from_json(cls, content: dict[str, Any]) -> ModelArgs:
        return cls(content["arch"], content["num_classes"], content["in_channels"], dict(content["options"]))


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

__all__ = ["ModelArgs", "ReLUSite", "architectures_taking", "create_model", "default_width", "input_problem",
           "list_models", "register_model", "relu_site", "relu_sites", "stage_of", "stem_relu_problem", "takes_option"]
