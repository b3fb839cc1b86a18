"""The plan: which trials a spec makes and which stages each needs.

A trial is the pipeline base(seed) → linearize(seed, budget, method) → finetune(…, µ). A stage's
identity is a content hash of its own config and its parent's identity, so trials that share a
prefix share those stages, within a sweep and across sweeps that share storage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fairsweep.spec import Spec

STAGE_KINDS = ("base", "linearize", "finetune")
# Bump when a stage's code changes what it computes, so stored stages are not reused wrongly.
STAGE_FORMAT = 1
# The same for what the diagnostics compute (part of a base model's diagnostics stage and of a trial's
# identity). 2: a group capped at max_samples_per_group is a seeded random draw, no longer its first samples.
DIAGNOSTICS_FORMAT = 2
# Keys a stage's config gained after stages were stored, with the value at which they compute what those
# stages computed: at that value a key is no part of the identity, so the stages stored before it are found.
LATER_KEYS = {"model": {"stem_relu": None}}


@dataclass(frozen=True)
class Stage:
    kind: str
    config: dict[str, Any] = field(hash=False, compare=False)
    parent: Stage | None = field(default=None, hash=False, compare=False)

    @cached_property
    def id(self) -> str:
        content = {"kind": self.kind, "format": STAGE_FORMAT, "config": self.config,
                   "parent": self.parent.id if self.parent else None}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return f"{self.kind}-{digest[:16]}"


@dataclass(frozen=True)
class Trial:
    spec: Spec  # the spec with this trial's grid values set
    values: dict[str, Any]  # the grid values, for names and tables

    @cached_property
    def stages(self) -> dict[str, Stage]:
        s = self.spec.model_dump(mode="json")
        base = Stage("base", {"seed": s["seed"], "data": s["data"], "model": _identity("model", s["model"]),
                              "base": s["base"]})
        lin = Stage("linearize", {"linearize": _method_config(s["linearize"])}, base)
        fin = Stage("finetune", {"finetune": s["finetune"]}, lin)
        return {"base": base, "linearize": lin, "finetune": fin}

    @cached_property
    def diagnostics_identity(self) -> dict[str, Any]:
        """What is measured of a model: the diagnostics config and the format of their code."""
        return {**self.spec.diagnostics.model_dump(mode="json"), "format": DIAGNOSTICS_FORMAT}

    @cached_property
    def base_diagnostics(self) -> Stage:
        """The base model's diagnostics, measured once per base model and diagnostics config."""
        return Stage("diagnose", {"diagnostics": self.diagnostics_identity}, self.stages["base"])

    @cached_property
    def id(self) -> str:
        """The final stage's identity and what is measured of it."""
        content = {"finetune": self.stages["finetune"].id, "diagnostics": self.diagnostics_identity}
        return "trial-" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.values.items()) or "trial"


def _identity(section: str, config: dict[str, Any]) -> dict[str, Any]:
    """`config` without the keys of LATER_KEYS[section] that are at their value of before."""
    later = LATER_KEYS.get(section, {})
    return {key: value for key, value in config.items() if key not in later or value != later[key]}


def _method_config(linearize: dict[str, Any]) -> dict[str, Any]:
    """The linearize section without DeepReDuce's options unless DeepReDuce runs: they do not change
    what SNL computes, so they are no part of an SNL stage's identity."""
    if linearize["method"] == "deepreduce":
        return linearize
    return {k: v for k, v in linearize.items() if k != "deepreduce"}


@dataclass(frozen=True)
class Plan:
    spec: Spec
    trials: list[Trial]

    def unique_stages(self, kind: str) -> dict[str, Stage]:
        return {t.stages[kind].id: t.stages[kind] for t in self.trials}


def make_plan(spec: Spec) -> Plan:
    """Expand the grid into trials, ordered so that trials running side by side rarely need the same
    missing stage (one would wait on the other's lock): keys of earlier stages vary faster, seeds
    fastest, then the rest of the base stage's keys, budgets, the rest of the linearization's, the
    finetuning's."""
    points = spec.grid_points()
    keys = sorted(spec.sweep.grid, key=_fastest_first)
    points.sort(key=lambda p: tuple(_sort_key(p[k]) for k in reversed(keys)))
    return Plan(spec, [Trial(spec.with_values(p), p) for p in points])


def _fastest_first(key: str) -> tuple[int, int]:
    """(the first stage whose identity the key is part of, 0 for the stage's leading key else 1)."""
    section = key.split(".", 1)[0]
    if section in ("seed", "data", "model", "base"):
        return (0, int(key != "seed"))
    if section == "linearize":
        return (1, int(key != "linearize.budget"))
    return (2, 0)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, value) if isinstance(value, str) else (2, json.dumps(value, sort_keys=True))
