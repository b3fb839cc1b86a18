"""DeepReDuce (Jha et al., 2021): structural ReLU reduction.

A configuration combines
- culling: every ReLU of the first k stages goes (the stem with stage 1), at least one stage stays;
- thinning: one ReLU per residual block stays, the one applied to the residual sum goes;
- reshaping: channel counts × α (`width_factors`) and input resolution × ρ (`resolution_factors`).
All combinations are enumerated for the architecture at the input size; a budget selects the one
with the most ReLUs at or under it. The selected model is built, its removed ReLUs become all-zero
masks (identities that cost nothing, see `ReLUSite`), and it trains from scratch with KD from the
base model, the published recipe: 0.5·CE + 0.5·T²·KL. That training is DeepReDuce's finetuning step,
so the paper's fairness-aware finetuning (Algorithm 1, µ > 0) replaces it.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from fairsweep.linearize import Linearized, Trainer, count_relus, register_linearizer
from fairsweep.models import ModelArgs, create_model, default_width, input_problem, relu_sites, stage_of


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
    least reshaped, least culled and unthinned first. `options`: the factory's other arguments (e.g.
    `stem_relu`), the same for every configuration."""
    options = {k: v for k, v in (options or {}).items() if k not in ("width", "resolution")}
    base_width = width or default_width(arch)
    configurations = []
    for alpha, rho in itertools.product(sorted(width_factors, reverse=True), sorted(resolution_factors, reverse=True)):
        scaled = max(1, round(alpha * base_width))
        if input_problem(arch, input_shape, width=scaled, resolution=rho, **options) is not None:
            continue
        sites = _sites(arch, input_shape, width=scaled, resolution=rho, **options)
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
    """The configured model, its removed ReLUs as all-zero masks; `options` as for `enumerate_configurations`."""
    options = {k: v for k, v in (options or {}).items() if k not in ("width", "resolution")}
    model = create_model(arch, num_classes=num_classes, in_channels=input_shape[0], width=config.width,
                         resolution=config.resolution_factor, **options)
    count_relus(model, input_shape)  # gives every site its unit shape
    for name, site in relu_sites(model).items():
        if config.removes(name, site.residual):
            site.set_mask(torch.zeros(site.unit_shape))
    return model


@register_linearizer("deepreduce")
def deepreduce(base: nn.Module, base_args: ModelArgs, cfg, budget: int, trainer: Trainer) -> Linearized:
    """`cfg` is `linearize.deepreduce` (DeepReduceConfig). The selected model trains from scratch with KD
    from the base model, 0.5·CE + 0.5·T²·KL; that training is DeepReDuce's finetuning step, so the sweep's
    fairness-aware finetuning (finetune.mu, finetune.mitigation) runs inside it (`Trainer.distill`)."""
    input_shape = tuple(trainer.data.train.x.shape[1:])
    width = base_args.options.get("width")
    configurations = enumerate_configurations(base_args.arch, input_shape, width, cfg.width_factors,
                                              cfg.resolution_factors, base_args.options)
    config = select_configuration(configurations, budget)
    if config is None:  # the sweep's checks reject such a budget before any training
        raise ValueError(f"no DeepReDuce configuration of {base_args.arch} has at most {budget} ReLUs")
    device = next(base.parameters()).device
    args = base_args.with_options(width=config.width, resolution=config.resolution_factor)
    model = build_configured(args.arch, args.num_classes, input_shape, config, args.options).to(device)
    history = trainer.distill(model, base.eval(), cfg, cfg.temperature, ce_weight=0.5, kd_weight=0.5)
    return Linearized(model, args, history, selected=config.record())
