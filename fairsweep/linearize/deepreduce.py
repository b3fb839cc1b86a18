"""DeepReDuce (Jha et al., 2021): structural ReLU reduction, as DESIGN.md states it.

A configuration combines
- culling: every ReLU of the first k stages goes (the stem with stage 1), at least one stage stays;
- thinning: one ReLU per residual block stays, the one applied to the residual sum goes;
- reshaping: channel counts × α (`width_factors`) and input resolution × ρ (`resolution_factors`).
All combinations are enumerated for the architecture at the input size; a budget selects the one
with the most ReLUs at or under it. The selected model is built, its removed ReLUs become all-zero
masks (identities that cost nothing, see `ReLUSite`), and it trains from scratch with KD from the
base model, the published recipe: 0.5·CE + 0.5·T²·KL.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from fairsweep.data import Splits
from fairsweep.linearize import Linearized, count_relus, register_linearizer
from fairsweep.models import create_model, default_width, input_problem, relu_sites, stage_of
from fairsweep.train.checkpoint import EpochCheckpoint
from fairsweep.train.losses import kd_loss, mean_objective


@dataclass(frozen=True)
class Configuration:
    culled: tuple[str, ...]  # stages whose ReLUs are all removed, in forward order
    thinned: bool
    width_factor: float  # α
    resolution_factor: float  # ρ
    width: int  # the architecture's `width` argument: α × the spec's width, rounded
    relu_count: int  # live ReLUs of the configured model at the input size

    def removes(self, site_name: str, residual: bool) -> bool:
        return stage_of(site_name) in self.culled or (self.thinned and residual)

    def record(self) -> dict:
        """For the trial record and MLflow params."""
        return {**asdict(self), "culled": ",".join(self.culled) or "none"}


def culling_order(stages: list[str]) -> list[tuple[str, ...]]:
    """The groups culling removes, in order: each stage, with a stem joining the stage after it."""
    groups: list[tuple[str, ...]] = []
    pending: tuple[str, ...] = ()
    for stage in stages:
        if stage == "stem":
            pending = (stage,)
        else:
            groups.append(pending + (stage,))
            pending = ()
    return groups


def _sites(arch: str, input_shape: tuple[int, ...], **kwargs) -> dict[str, tuple[int, bool]]:
    """(units, residual) of every ReLU site of `arch` at `input_shape`; built on the meta device (no compute)."""
    with torch.device("meta"):
        model = create_model(arch, num_classes=2, in_channels=input_shape[0], **kwargs)
    count = count_relus(model, input_shape)
    return {name: (count.sites[name], site.residual) for name, site in relu_sites(model).items()}


def enumerate_configurations(arch: str, input_shape: tuple[int, ...], width: int | None, width_factors: list[float],
                             resolution_factors: list[float], options: dict | None = None) -> list[Configuration]:
    """Every configuration `arch` can take at `input_shape` (reshapings it cannot take are left out),
    least reshaped, least culled and unthinned first. `options`: the architecture's other arguments
    (the spec's `model.factory_kwargs()`, e.g. stem_relu); width and resolution are the configuration's."""
    base_width = width or default_width(arch)
    configurations = []
    for alpha, rho in itertools.product(sorted(width_factors, reverse=True), sorted(resolution_factors, reverse=True)):
        scaled = max(1, round(alpha * base_width))
        kwargs = {**(options or {}), "width": scaled, "resolution": rho}
        if input_problem(arch, input_shape, **kwargs) is not None:
            continue
        sites = _sites(arch, input_shape, **kwargs)
        groups = culling_order(list(dict.fromkeys(stage_of(name) for name in sites)))
        thinning = (False, True) if any(residual for _, residual in sites.values()) else (False,)
        for k, thinned in itertools.product(range(len(groups)), thinning):
            culled = tuple(itertools.chain(*groups[:k]))
            config = Configuration(culled, thinned, alpha, rho, scaled, relu_count=0)
            count = sum(units for name, (units, residual) in sites.items() if not config.removes(name, residual))
            configurations.append(replace(config, relu_count=count))
    return configurations


def select_configuration(configurations: list[Configuration], budget: int) -> Configuration | None:
    """The configuration with the most ReLUs at or under `budget` (the first enumerated on a tie), or None."""
    fitting = [c for c in configurations if c.relu_count <= budget]
    return max(fitting, key=lambda c: c.relu_count, default=None)


def build_configured(arch: str, num_classes: int, input_shape: tuple[int, ...], config: Configuration,
                     options: dict | None = None) -> nn.Module:
    """The configured model (`options` as in `enumerate_configurations`), its removed ReLUs as all-zero masks."""
    model = create_model(arch, num_classes=num_classes, in_channels=input_shape[0],
                         **{**(options or {}), "width": config.width, "resolution": config.resolution_factor})
    count_relus(model, input_shape)  # gives every site its unit shape
    for name, site in relu_sites(model).items():
        if config.removes(name, site.residual):
            site.set_mask(torch.zeros(site.unit_shape))
    return model


@register_linearizer("deepreduce")
def deepreduce(base: nn.Module, splits: Splits, spec, budget: int, generator: torch.Generator,
               checkpoint: EpochCheckpoint | None = None) -> Linearized:
    from fairsweep.train.stages import fit  # the stage recipes import this registry: import at call time

    cfg = spec.linearize.deepreduce
    input_shape = tuple(splits.train.x.shape[1:])
    options = spec.model.factory_kwargs()
    configurations = enumerate_configurations(spec.model.arch, input_shape, spec.model.width, cfg.width_factors,
                                              cfg.resolution_factors, options)
    config = select_configuration(configurations, budget)
    if config is None:  # the sweep's checks reject such a budget before any training
        raise ValueError(f"no DeepReDuce configuration of {spec.model.arch} has at most {budget} ReLUs")
    device = next(base.parameters()).device
    model = build_configured(spec.model.arch, len(splits.train.class_names), input_shape, config, options).to(device)
    kd = kd_loss(base.eval(), spec.linearize.temperature, ce_weight=0.5, kd_weight=0.5)  # 0.5·CE + 0.5·T²·KL
    history = fit(model, splits, cfg, spec.data.batch_size, generator, mean_objective(kd), checkpoint=checkpoint)
    return Linearized(model, history, architecture={"width": config.width, "resolution": config.resolution_factor},
                      selected=config.record())
