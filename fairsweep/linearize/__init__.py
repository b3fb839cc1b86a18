"""ReLU accounting and the registry of linearization methods.

A method takes the trained base model and returns a model whose ReLU sites carry binary masks
with at most `budget` live units in all (SNL: a copy of the base model; DeepReDuce: a reshaped
model trained anew).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from fairsweep.models.sites import relu_sites, stage_of
from fairsweep.registry import Registry


@dataclass(frozen=True)
class ReLUCount:
    total: int
    sites: dict[str, int]  # live units per site, in forward order

    @property
    def stages(self) -> dict[str, int]:
        """Live units per stage (`stem`, `stage1`, …: a site's top-level module), in forward order."""
        out: dict[str, int] = {}
        for name, units in self.sites.items():
            out[stage_of(name)] = out.get(stage_of(name), 0) + units
        return out


@torch.no_grad()
def count_relus(model: nn.Module, input_shape: tuple[int, ...]) -> ReLUCount:
    """Live ReLUs of `model` for one input of `input_shape` (C, H, W): unmasked sites count every unit."""
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    model.train(was_training)
    sites = {name: site.live_units() for name, site in relu_sites(model).items()}
    return ReLUCount(sum(sites.values()), sites)


def resolve_budget(budget: float, total: int) -> int:
    """A budget below 1 is a fraction of `total`; from 1 on it is a count of ReLUs."""
    return max(1, round(budget * total)) if budget < 1 else int(budget)


@dataclass
class Linearized:
    """What a linearization method returns."""

    model: nn.Module  # its ReLU sites carry binary masks
    history: list[dict]  # one record per epoch; its keys become MLflow curves
    architecture: dict = field(default_factory=dict)  # create_model arguments that differ from the spec's model
    selected: dict = field(default_factory=dict)  # what the method chose, for the trial record and MLflow params


# fn(base, splits, spec: Spec, budget: int, generator, checkpoint: EpochCheckpoint | None) -> Linearized
Linearizer = Callable[..., Linearized]
LINEARIZERS: Registry[Linearizer] = Registry("linearization method")


def register_linearizer(name: str) -> Callable[[Linearizer], Linearizer]:
    return lambda fn: LINEARIZERS.add(name, fn)


list_linearizers = LINEARIZERS.names
get_linearizer = LINEARIZERS.get


from fairsweep.linearize import deepreduce as _deepreduce  # noqa: E402,F401  (registers "deepreduce")
from fairsweep.linearize import random as _random  # noqa: E402,F401  (registers "random")
from fairsweep.linearize import snl as _snl  # noqa: E402,F401  (registers "snl")
