"""The plan: which trials a spec makes, and which stages each needs, named by what they compute.

A trial is the pipeline base(seed) → linearize(seed, budget, method) → finetune(…, µ); a DeepReDuce
trial has no finetune stage (its own KD training is the finetuning step, which µ drives) unless
`linearize.deepreduce.finetune` asks for one. A stage's identity is a hash of exactly what it
computes — an explicit list per stage kind (`stage_config`) — and its parent's identity, so trials
that share a prefix share those stages, within a sweep and across sweeps that share storage:

- data: the dataset, its target and group, the imbalance, the split fractions, augmentation, and a
  digest of the loaded content — never where the files live (`data.root`) or checks that change
  nothing (`data.min_group_size`);
- base: the data, the seed, the architecture (its width and stem resolved), the training recipe
  (its batch size resolved);
- linearize: the method, the budget and that method's own options (DeepReDuce's include the
  fairness-aware finetuning that drives its training); another method's options are no part of it;
- finetune: its recipe, µ and the mitigation mode.

`tests/test_stage_identity.py` walks every spec field and checks which stage kinds it may change:
that table is the reviewed record of what each stage depends on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fairsweep.data import ContentDigests, resolve
from fairsweep.models import ModelArgs, default_width, takes_option
from fairsweep.spec import DataConfig, OptimConfig, Spec, has_finetune_stage
from fairsweep.sweep.shared import Shared

STAGE_KINDS = ("base", "linearize", "finetune")
# Bump when a stage's code changes what it computes, so stored stages are not reused wrongly. 2: stage
# identity from what each stage computes (1 hashed whole spec sections, data.root and checks included).
STAGE_FORMAT = 2

DigestFn = Callable[[DataConfig], str]  # a (resolved) data configuration -> the digest of its content


@dataclass(frozen=True)
class Stage:
    kind: str  # base, linearize, finetune; diagnose (the base model's diagnostics)
    config: dict[str, Any] = field(hash=False, compare=False)  # what it computes, as JSON
    parent: Stage | None = field(default=None, hash=False, compare=False)

    @cached_property
    def id(self) -> str:
        content = {"kind": self.kind, "format": STAGE_FORMAT, "config": self.config,
                   "parent": self.parent.id if self.parent else None}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return f"{self.kind}-{digest[:16]}"


def data_identity(data: DataConfig, digest: str) -> dict[str, Any]:
    """What a (resolved) data configuration gives a stage: not where its files live, not its checks."""
    imbalance = data.imbalance.model_dump(mode="json") if data.imbalance is not None else None
    return {"dataset": data.dataset, "target": data.target, "group": data.group, "imbalance": imbalance,
            "val_fraction": data.val_fraction, "test_fraction": data.test_fraction, "augment": data.augment,
            "content": digest}


def model_identity(spec: Spec) -> dict[str, Any]:
    """The architecture with its defaults resolved (a width left out is the architecture's own)."""
    model = spec.model
    out: dict[str, Any] = {"arch": model.arch, "width": model.width or default_width(model.arch)}
    if takes_option(model.arch, "stem_relu"):
        out["stem_relu"] = True if model.stem_relu is None else model.stem_relu
    return out


def base_model_args(spec: Spec, num_classes: int, in_channels: int) -> ModelArgs:
    """The base model's `create_model` arguments: the spec's model section, what it sets."""
    return ModelArgs(spec.model.arch, num_classes, in_channels, spec.model.factory_kwargs())


def recipe(cfg: OptimConfig, batch_size: int) -> dict[str, Any]:
    """An optimization recipe with its batch size resolved (`batch_size` where it sets none)."""
    content = cfg.model_dump(mode="json")
    content["batch_size"] = cfg.batch_size or batch_size
    return content


def stage_config(spec: Spec, kind: str, digest: str) -> dict[str, Any]:
    """What a stage of `kind` of the (resolved) trial spec computes, beyond its parent: the explicit list."""
    batch = spec.data.batch_size
    if kind == "base":
        return {"seed": spec.seed, "data": data_identity(spec.data, digest), "model": model_identity(spec),
                "recipe": recipe(spec.base, batch)}
    if kind == "linearize":
        lin = spec.linearize
        if lin.method == "snl":
            options = {**lin.snl.model_dump(mode="json"), "batch_size": lin.snl.batch_size or batch}
        elif lin.method == "deepreduce":
            options = recipe(lin.deepreduce, batch)
            del options["finetune"]  # whether a finetune stage follows is no part of what DeepReDuce computes
            options["fairness"] = {"mu": spec.finetune.mu, "mitigation": spec.finetune.mitigation}
        else:
            options = lin.random.model_dump(mode="json")
        return {"method": lin.method, "budget": lin.budget, "options": options}
    if kind == "finetune":
        return {"recipe": recipe(spec.finetune, batch)}
    raise ValueError(f"unknown stage kind {kind}")


def resolve_spec(spec: Spec) -> Spec:
    """`spec` with its data section's defaults filled in from the dataset registry."""
    return spec.model_copy(update={"data": resolve(spec.data)})


@dataclass(frozen=True)
class Trial:
    spec: Spec  # the sweep's spec with this trial's values set and its data defaults resolved
    values: dict[str, Any]  # the grid (or search) values, for names and tables
    data_digest: str  # of the loaded data's content
    # the plan's pool of equal parts: spec sections and stages the trial shares with others held once
    shared: Shared | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, spec: Spec, values: dict[str, Any], digests: DigestFn, shared: Shared | None = None) -> Trial:
        trial_spec = resolve_spec(spec.with_values(values))
        if shared is not None:
            trial_spec = shared.spec(trial_spec)
        return cls(trial_spec, values, digests(trial_spec.data), shared)

    def _stage(self, kind: str, config: dict[str, Any], parent: Stage | None) -> Stage:
        stage = Stage(kind, config, parent)
        return self.shared.stage(stage) if self.shared is not None else stage

    @cached_property
    def stages(self) -> dict[str, Stage]:
        """The trial's stages by kind, in pipeline order (no `finetune` for a DeepReDuce trial without one)."""
        out: dict[str, Stage] = {}
        parent = None
        for kind in STAGE_KINDS:
            if kind == "finetune" and not has_finetune_stage(self.spec):
                break
            parent = out[kind] = self._stage(kind, stage_config(self.spec, kind, self.data_digest), parent)
        return out

    @property
    def final(self) -> Stage:
        """The stage whose model the trial measures."""
        return list(self.stages.values())[-1]

    @cached_property
    def base_diagnostics(self) -> Stage:
        """The base model's diagnostics, measured once per base model and diagnostics config."""
        diagnostics = {"diagnostics": self.spec.diagnostics.model_dump(mode="json")}
        return self._stage("diagnose", diagnostics, self.stages["base"])

    @cached_property
    def id(self) -> str:
        """The final stage's identity and what is measured of it."""
        content = {"final": self.final.id, "diagnostics": self.spec.diagnostics.model_dump(mode="json")}
        return "trial-" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        """Its values in the grid's order, as progress lines and tables show them: `seed=0,budget=0.03,mu=0`."""
        return _values_name(self.values)

    @property
    def run_name(self) -> str:
        """The name of its MLflow run: its values with the later stages' first and the seed last
        (`mu=0,budget=0.03,seed=0`), so a runs list cut short shows what tells sibling runs apart."""
        return _values_name(dict(sorted(self.values.items(), key=lambda item: _name_order(item[0]))))


@dataclass(frozen=True)
class Plan:
    spec: Spec
    trials: list[Trial]

    def unique_stages(self, kind: str) -> dict[str, Stage]:
        return {t.stages[kind].id: t.stages[kind] for t in self.trials if kind in t.stages}


def make_plan(spec: Spec, digests: DigestFn | None = None) -> Plan:
    """Expand the grid into trials, ordered so that trials running side by side rarely need the same
    missing stage (one would wait on the other's lock): keys of earlier stages vary faster, seeds
    fastest, then the rest of the base stage's keys, budgets, the rest of the linearization's, the
    finetuning's. `digests` gives each data configuration's content digest (default: load each once)."""
    digests = digests or ContentDigests()
    points = spec.grid_points()
    keys = sorted(spec.sweep.grid, key=_fastest_first)
    points.sort(key=lambda p: tuple(_sort_key(p[k]) for k in reversed(keys)))
    shared = Shared()
    return Plan(spec, [Trial.of(spec, p, digests, shared) for p in points])


def probe_points(spec: Spec) -> list[dict[str, Any]]:
    """A search's probe values of each dimension (low, high, every choice), one at a time, for the pre-flight."""
    return [{key: value} for key, param in spec.sweep.search.space.items() for value in param.probes()]


def _fastest_first(key: str) -> tuple[int, int]:
    """(the first stage whose identity the key is part of, 0 for the stage's leading key else 1)."""
    section = key.split(".", 1)[0]
    if section in ("seed", "data", "model", "base"):
        return (0, int(key != "seed"))
    if section == "linearize":
        return (1, int(key != "linearize.budget"))
    return (2, 0)


def _name_order(key: str) -> tuple[bool, int, int]:
    """Run names: the seed last, the later stages' keys first, a stage's leading key (the budget) first in it."""
    stage, other = _fastest_first(key)
    return (key == "seed", -stage, other)


def _values_name(values: dict[str, Any]) -> str:
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items()) or "trial"


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, value) if isinstance(value, str) else (2, json.dumps(value, sort_keys=True))
