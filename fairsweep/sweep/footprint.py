"""A plan's disk footprint before anything trains: the size of each stage's stored model.

A stored stage is its model's state dict (`model.pt`, masks included) and a small `result.json`. The
state's size depends only on the architecture and its input shape, never on the trained values, so a
stage's model is built here without training: the base model as the spec makes it; SNL's and random
linearization's with a mask on every ReLU site (what binarization leaves); DeepReDuce's configured model
for the budget, its removed ReLUs as all-zero masks (as the trial builds it). A finetuned stage keeps its
linearized model's shape. `tests/test_footprint.py` holds these sizes against a trained trial's files.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fairsweep.linearize import count_relus, resolve_budget
from fairsweep.linearize.deepreduce import build_configured, enumerate_configurations, select_configuration
from fairsweep.models import relu_sites
from fairsweep.spec import Spec
from fairsweep.sweep.plan import STAGE_KINDS, Plan, base_model_args

# a data configuration's (resolved) spec -> (one sample's input shape, number of classes)
InputsFn = Callable[[Spec], tuple[tuple[int, ...], int]]
RESULT_BYTES = 8192  # a stage's result.json and stage.json (a few KB with their per-epoch histories) and its directory


@dataclass(frozen=True)
class Footprint:
    """The sizes of the plan's unique stages' models, in bytes, per stage kind; and of the trials' final models
    (each a finetuned or linearized stage: what MLflow holds a copy of where `tracking.log_models` logs it)."""

    stages: dict[str, list[int]]
    finals: list[int]

    @property
    def total(self) -> int:
        """Every stage stored, in bytes (its results beside its model)."""
        return sum(size + RESULT_BYTES for sizes in self.stages.values() for size in sizes)

    def line(self, log_models: str = "all") -> str:
        """For people: the total, per kind how many stages of what size, and what MLflow's copies of final
        models add under `tracking.log_models` (`log_models`)."""
        parts = []
        for kind, sizes in self.stages.items():
            low, high = min(sizes), max(sizes)
            each = human_bytes(high) if low == high else f"{human_bytes(low)}–{human_bytes(high)}"
            parts.append(f"{len(sizes)} {kind} × {each}")
        copies = {"all": f"a copy of each final model in MLflow adds {human_bytes(sum(self.finals))}",
                  "front": "MLflow's copies of the Pareto front's final models add at most "
                           f"{human_bytes(sum(self.finals))} (tracking.log_models: front)",
                  "none": "MLflow keeps no copy of a model (tracking.log_models: none)"}[log_models]
        return (f"storage: about {human_bytes(self.total)} for {sum(map(len, self.stages.values()))} stages "
                f"({', '.join(parts)}); {copies}")


def stage_model(spec: Spec, kind: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A model shaped as the stage of `kind` of the trial `spec` stores it (its values untrained)."""
    args = base_model_args(spec, num_classes, input_shape[0])
    lin = spec.linearize
    if kind != "base" and lin.method == "deepreduce":
        dr = lin.deepreduce
        configurations = enumerate_configurations(args.arch, input_shape, args.options.get("width"),
                                                  dr.width_factors, dr.resolution_factors, args.options)
        with torch.device("meta"):  # the budget as a count of the base model's ReLUs: shapes only, no compute
            total = count_relus(args.build(), input_shape).total
        config = select_configuration(configurations, resolve_budget(lin.budget, total))
        if config is None:  # the pre-flight rejects such a budget; the base model's size then
            return stage_model(spec, "base", input_shape, num_classes)
        return build_configured(args.arch, num_classes, input_shape, config, args.options)
    model = args.build()
    if kind != "base":
        count_relus(model, input_shape)  # gives every site its unit shape
        for site in relu_sites(model).values():
            site.set_mask(torch.ones(site.unit_shape))
    return model


def state_bytes(model: nn.Module) -> int:
    """The size of `model.pt` for this model: its state dict as `torch.save` writes it."""
    buffer = io.BytesIO()
    torch.save({k: v.detach() for k, v in model.state_dict().items()}, buffer)
    return buffer.getbuffer().nbytes


def plan_footprint(plan: Plan, inputs: InputsFn) -> Footprint:
    """Size the model of each of the plan's unique stages (one build per architecture, method and shape)."""
    memo: dict[str, int] = {}
    sizes: dict[str, int] = {}  # stage id -> bytes
    stages: dict[str, list[int]] = {}
    for trial in plan.trials:
        spec = trial.spec
        input_shape, classes = inputs(spec)
        for kind, stage in trial.stages.items():
            if stage.id in sizes:
                continue
            shaped_by = spec.linearize.model_dump(mode="json", include={"method", "budget", "deepreduce"}) \
                if kind != "base" and spec.linearize.method == "deepreduce" else spec.linearize.method
            key = repr((kind == "base", spec.model.model_dump(mode="json"), shaped_by, input_shape, classes))
            if key not in memo:
                memo[key] = state_bytes(stage_model(spec, kind, input_shape, classes))
            sizes[stage.id] = memo[key]
            stages.setdefault(kind, []).append(memo[key])
    finals = {trial.final.id: sizes[trial.final.id] for trial in plan.trials}
    return Footprint({kind: stages[kind] for kind in STAGE_KINDS if kind in stages}, list(finals.values()))


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KB'; decimal units, as `du --si` and disk vendors count."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")
