"""Model registry: `@register_model` on a factory, `create_model(name, ...)`, `list_models()`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fairsweep.models.sites import ReLUSite, relu_site, relu_sites
from fairsweep.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("architecture")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a factory under its function name: `@register_model def resnet18(num_classes, ...)`."""
    return MODELS.add(fn.__name__, fn)


list_models = MODELS.names


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)


from fairsweep.models import small as _small  # noqa: E402,F401  (registers the small networks)

__all__ = ["ReLUSite", "create_model", "list_models", "register_model", "relu_site", "relu_sites"]
