"""A search's space and objectives (`sweep.search`): typed, validated pydantic models."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from fairsweep.spec.section import Section

# The scalar metrics of a trial record that a search or a Pareto front can optimize; per-group keys
# (`group_acc/<g>`) depend on the data and are left out.
OBJECTIVE_METRICS = ("acc", "worst_group_acc", "acc_gap", "drop_gap_pct", "relu_count", "relu_fraction",
                     "param_dist", "bound_holds_frac")
Direction = Literal["max", "min"]


class SearchParam(Section):
    """One dimension of a search space: `float` or `int` between low and high (log-uniform with
    `log: true`), or `categorical` over `choices`."""

    type: Literal["float", "int", "categorical"] = Field(description="float, int or categorical")
    low: float | None = Field(default=None, description="float, int: the lowest value")
    high: float | None = Field(default=None, description="float, int: the highest value")
    log: bool = Field(default=False, description="draw log-uniformly (low > 0)")
    step: float | None = Field(default=None, gt=0, description="a grid step within [low, high]; not with log")
    choices: list[Any] | None = Field(default=None, min_length=1, description="categorical: the values")

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if self.choices is None or self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter takes `choices` (a non-empty list) and no low or high")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise ValueError(f"a {self.type} parameter takes `low` and `high` and no choices")
        if self.low >= self.high:
            raise ValueError("low must be below high")
        if self.log and self.low <= 0:
            raise ValueError("a log-uniform parameter (log: true) needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("`step` and `log` cannot be combined")
        if self.type == "int" and any(v != int(v) for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int parameter takes whole numbers as low, high and step")
        return self

    def probes(self) -> list[Any]:
        """Values to check before a search starts: every choice; or low, high and, for a continuous
        float, a value inside that is no round number (e.g. a float budget above 1 must be whole)."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        inside = self.low + (self.high - self.low) / math.pi
        return [self.low, self.high] + ([inside] if self.step is None else [])


class SearchConfig(Section):
    """Optuna search of the Pareto front: `space` maps dotted spec keys to distributions, `objectives`
    maps metric names to `max` or `min`. Each Optuna trial runs `seeds_per_trial` fairsweep trials
    (seeds spec.seed, spec.seed + 1, ...) and its objective values are their means."""

    space: dict[str, SearchParam] = Field(min_length=1, description="dotted spec key -> distribution")
    objectives: dict[str, Direction] = Field(min_length=1, description="metric -> max or min")
    n_trials: int = Field(default=20, ge=1, description="finished Optuna trials the study should hold")
    seeds_per_trial: int = Field(default=1, ge=1, description="seeds each Optuna trial runs (with adaptive "
                                                               "seeds: at most)")
    seeds: Literal["fixed", "adaptive"] = Field(default="fixed", description=(
        "fixed: every configuration runs seeds_per_trial seeds; adaptive: one seed first, and another only "
        "while the seed means, two standard errors hopeful, could still be on the Pareto front"))
    sampler: Literal["tpe", "nsga2", "random"] = Field(default="tpe", description="Optuna's sampler")
    sampler_seed: int | None = Field(default=0, description="null: unseeded, not reproducible")
