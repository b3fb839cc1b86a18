"""ReLU accounting, and the registry of linearization methods.

A method takes the trained base model and returns a model whose ReLU sites carry binary masks with
at most `budget` live units in all (SNL: the base model with its least useful units made linear;
DeepReDuce: a reshaped model trained anew; random: a seeded random subset). Methods that train do
so through the `Trainer` the training layer passes in, so this layer never imports the training
code above it: it says what a method computes, the training layer how to optimize.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from fairsweep.models import ModelArgs
from fairsweep.models.sites import relu_sites, stage_of
from fairsweep.registry import Registry

if TYPE_CHECKING:
    from fairsweep.data import Splits
    from fairsweep.spec import OptimConfig


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
    model_args: ModelArgs  # how to build it (DeepReDuce's differ from the base model's)
    history: list[dict]  # one record per epoch; its keys become MLflow curves
    selected: dict = field(default_factory=dict)  # what the method chose, for the trial record and MLflow params


# (model, x (N, ...) inputs, y (N,) targets, g (N,) groups) -> (objective (), per-sample loss (N,))
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Trainer(Protocol):
    """What a linearization method may ask of the training layer, which passes itself in: the stage's
    data and generator, and training on its training split (epoch checkpoints included)."""

    data: Splits
    generator: torch.Generator  # the stage's random draws (batch order; a random method's units)

    def kd(self, teacher: nn.Module, temperature: float) -> Callable[[nn.Module, torch.Tensor, torch.Tensor],
                                                                      torch.Tensor]:
        """The KD loss CE + T²·KL of a student from `teacher`, per sample."""

    def loop(self, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, max_epochs: int,
             batch_size: int | None, on_epoch: Callable[[Any], bool]) -> int:
        """Train until `on_epoch(summary)` returns True or `max_epochs` are done; returns the epochs run."""

    def carry(self, name: str, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        """Save `get()` with every epoch checkpoint; `put(saved)` restores it on a resume."""

    def record(self, history: list[dict], row: dict) -> None:
        """Add an epoch's `row` to the method's `history` (what becomes its MLflow curves), as it is made."""

    def distill(self, model: nn.Module, teacher: nn.Module, recipe: OptimConfig, temperature: float,
                ce_weight: float, kd_weight: float) -> list[dict]:
        """Train `model` with `recipe` on ce_weight·CE + kd_weight·T²·KL from `teacher`, under the sweep's
        fairness-aware finetuning (finetune.mu, finetune.mitigation); returns the per-epoch history."""


class Linearizer(Protocol):
    """A linearization method: `config` is its own section of the spec (`linearize.<method>`)."""

    def __call__(self, base: nn.Module, base_args: ModelArgs, config: Any, budget: int,
                 trainer: Trainer) -> Linearized: ...


LINEARIZERS: Registry[Linearizer] = Registry("linearization method")


def register_linearizer(name: str) -> Callable[[Linearizer], Linearizer]:
    return lambda fn: LINEARIZERS.add(name, fn)


list_linearizers = LINEARIZERS.names
get_linearizer = LINEARIZERS.get


from fairsweep.linearize import deepreduce as _deepreduce  # noqa: E402,F401  (registers "deepreduce")
from fairsweep.linearize import random as _random  # noqa: E402,F401  (registers "random")
from fairsweep.linearize import snl as _snl  # noqa: E402,F401  (registers "snl")
