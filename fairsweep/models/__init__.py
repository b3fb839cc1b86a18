"""Model registry: `@register_model` on a factory, `create_model(name, ...)`, `list_models()`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fairsweep.models.sites import ReLUSite, relu_site, relu_sites

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


from fairsweep.models import small as _small  # noqa: E402,F401  (registers the small networks)

__all__ = ["ReLUSite", "create_model", "list_models", "register_model", "relu_site", "relu_sites"]
