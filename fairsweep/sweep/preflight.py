"""Pre-flight: everything that can be known wrong before any training, reported together.

In order: what every trial's spec names must exist (datasets, their attributes, architectures and
their options) and where a dataset's files must be (found, not read: `check_spec`), all reported at
once, so that a dataset switched by `--set` learns in one go every key still to set; then each data
configuration is loaded (its files read and decoded into the cache once), its groups counted, the
architecture checked against its inputs and each budget against the model's ReLUs, and Ray's
resources against what a trial asks (`check_plan`).
A problem is named at the key the user wrote (`sweep.grid.model.arch` for a grid's value).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fairsweep import errors
from fairsweep.data import ContentDigests, dataset_info, load_splits
from fairsweep.data.cache import DataCache
from fairsweep.data.checks import data_problems, ignored_keys
from fairsweep.errors import UserError
from fairsweep.linearize import count_relus, resolve_budget
from fairsweep.linearize.deepreduce import enumerate_configurations
from fairsweep.metrics.values import key_collisions, safe_key
from fairsweep.models import input_problem, list_models, stem_relu_problem
from fairsweep.spec import Spec
from fairsweep.sweep.plan import STAGE_KINDS, Plan, Trial, base_model_args, make_plan
from fairsweep.sweep.store import StageStore


def key_label(values: dict[str, Any], key: str, varied: str = "sweep.grid") -> str:
    """How a problem names `key`: as the grid's (or search space's) key where the trial's value comes from there."""
    return f"{varied}.{key}" if key in values else key


@dataclass(frozen=True)
class DataSummary:
    """What the driver saw of one data configuration of the plan (split with its first trial's seed)."""

    dataset: str
    seed: int
    group_sizes: dict[str, dict[str, int]]  # split -> group -> samples
    notes: tuple[str, ...]

    def lines(self) -> list[str]:
        """One line per group: its samples in train / val / test."""
        sizes = self.group_sizes
        head = f"data {self.dataset} (seed {self.seed}), samples per group in train / val / test:"
        return [head, *(f"  {g}: {sizes['train'][g]} / {sizes['val'][g]} / {sizes['test'][g]}" for g in sizes["train"]),
                *self.notes]


@dataclass(frozen=True)
class Checked:
    plan: Plan  # the grid's trials; a search's probe trials
    data: list[DataSummary]
    digests: Any  # `ContentDigests`: each data configuration's content digest, for the trials still to come
    budgets: list[str] = field(default_factory=list)  # each budget as the ReLU count it resolves to
    notes: list[str] = field(default_factory=list)  # on the spec, e.g. a data key its dataset ignores
    inputs: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)  # `data_key` -> (shape, classes)

    def inputs_of(self, spec: Spec) -> tuple[tuple[int, ...], int]:
        """One sample's input shape and the number of classes of a trial's data (`footprint.InputsFn`)."""
        return self.inputs[data_key(spec)]

    def lines(self) -> list[str]:
        """What the check saw, for people: each data configuration's groups, the budgets' counts, the notes."""
        lines = [line for summary in self.data for line in summary.lines()]
        return lines + (["budgets: " + ", ".join(self.budgets)] if self.budgets else []) + self.notes


def preflight(spec: Spec, storage: Path | None, resources: dict[str, float] | None, where: str = "this machine",
              points: list[dict[str, Any]] | None = None) -> Checked:
    """Check `spec` (its grid's trials, or `points` instead: a search's probe values) and plan it; raises
    a `UserError` with every problem found. `resources`: what Ray offers a trial (None: not checked)."""
    varied = "sweep.search.space" if spec.sweep.search is not None else "sweep.grid"
    if storage is not None and (problems := storage_problems(storage)):
        raise UserError(problems)
    notes = check_spec(spec, points if points is not None else spec.grid_points(), varied)
    cache = DataCache(StageStore(storage).data_cache) if storage is not None else None
    digests = ContentDigests(file_cache=cache)
    if points is None:
        plan = make_plan(spec, digests)
    else:
        plan = Plan(spec, [Trial.of(spec, p, digests) for p in points])
    budgets: dict[tuple[str, Any], tuple[int, int]] = {}
    inputs: dict[str, tuple[tuple[int, ...], int]] = {}
    data = check_plan(plan, resources, where, storage, budgets, inputs)
    lines = [f"{budget!r} → {count:,} of {total:,} ReLUs" + (f" ({arch})" if len({a for a, _ in budgets}) > 1 else "")
             for (arch, budget), (count, total) in budgets.items()]
    return Checked(plan, data, digests, lines, notes, inputs)


def storage_problems(storage: Path) -> list[str]:
    """The storage must be a directory this process can write (created here if missing)."""
    path = Path(storage).expanduser()
    if path.exists() and not path.is_dir():
        return [errors.STORAGE_NOT_USABLE.format(path=storage, reason=f"{path} is a file, not a directory")]
    reason = errors.unwritable(path)
    return [errors.STORAGE_NOT_USABLE.format(path=storage, reason=reason)] if reason else []


def check_spec(spec: Spec, points: list[dict[str, Any]], varied: str = "sweep.grid") -> list[str]:
    """What each trial's spec names must be registered: the dataset and its attributes, the architecture and
    the options it is given; a file-backed dataset's files must be found. Every problem once, at the key the
    user wrote. Returns notes on the `data` keys set that a trial's dataset ignores."""
    problems: list[str] = []
    notes: list[str] = []
    for values in points or [{}]:
        trial_spec = spec.with_values(values)
        problems.extend(data_problems(trial_spec.data, lambda key: key_label(values, f"data.{key}", varied)))
        given = spec.data.model_fields_set | {key.split(".")[1] for key in values if key.startswith("data.")}
        notes.extend(ignored_keys(trial_spec.data, given))
        model = trial_spec.model
        arch_key = key_label(values, "model.arch", varied)
        if model.arch not in list_models():
            problems.append(errors.BAD_VALUE.format(key=arch_key, value=model.arch, reason=errors.unknown_name(
                "architecture", model.arch, list_models())))
        elif model.stem_relu is not None:
            problem = stem_relu_problem(model.arch, key_label(values, "model.stem_relu", varied),
                                        str(model.stem_relu).lower())
            problems.extend([problem] if problem else [])
    if problems:
        raise UserError(list(dict.fromkeys(problems)))
    return list(dict.fromkeys(notes))


def data_key(spec: Spec) -> str:
    """A trial's data configuration as a key: trials with equal keys load the same data."""
    return json.dumps(spec.data.model_dump(mode="json"), sort_keys=True)


def check_plan(plan: Plan, resources: dict[str, float] | None, where: str = "this machine",
               storage: Path | None = None, budgets: dict | None = None,
               inputs: dict | None = None) -> list[DataSummary]:
    """The checks that need the data: group sizes, the architecture against the inputs, budgets against the
    model's ReLUs, and (unless `resources` is None) whether Ray can ever schedule a trial.

    Each data configuration is loaded here, in the driver, so a dataset's files are found, read and
    decoded into the cache under `storage` (if given) once, before any trial needs them (kept even if
    the plan has problems: decoding is the expensive part); an embedded dataset's first split is read from
    the cache when it exists, so that a resume imports no scikit-learn. Once the plan has none, each configuration
    is split with every seed of the plan, checked, and cached there too, so that the trials' workers
    never compute a split. Returns what was seen of each data configuration (split with its first seed);
    `budgets`, if given, receives (architecture, budget) -> (ReLU count, the model's ReLUs) of every trial;
    `inputs`, `data_key` -> (one sample's input shape, the number of classes) of every data configuration."""
    problems = resource_problems(plan.spec, resources, where)
    cache = DataCache(StageStore(storage).data_cache) if storage is not None else None
    summaries: dict[str, DataSummary | None] = {}
    inputs = {} if inputs is None else inputs  # data key -> (input shape, classes)
    counts: dict[str, Any] = {}  # model_problems' memo across trials
    seeds: dict[tuple[str, int], Spec] = {}  # (data key, seed) -> a spec with them
    varied = "sweep.search.space" if plan.spec.sweep.search is not None else "sweep.grid"
    for trial in plan.trials:
        spec = trial.spec
        key = data_key(spec)
        seeds.setdefault((key, spec.seed), spec)
        if key not in summaries:
            try:
                # An embedded dataset's split is read from a cache that exists (a resume's), never written
                # before the plan is known to be sound: a rejected spec leaves no storage behind.
                embedded = dataset_info(spec.data.dataset).embedded
                first = None if embedded and cache is not None and not cache.root.exists() else cache
                splits = load_splits(spec.data, spec.seed, first)
            except UserError as exc:
                problems.extend(exc.problems)
                summaries[key] = None
                continue
            summaries[key] = DataSummary(spec.data.dataset, spec.seed, splits.group_sizes(), splits.notes)
            problems.extend(errors.GROUP_KEYS_COLLIDE.format(name=spec.data.dataset, first=a, second=b, key=safe_key(b))
                            for a, b in key_collisions(splits.train.group_names))
            inputs[key] = (tuple(splits.train.x.shape[1:]), len(splits.train.class_names))
        if summaries[key] is None:
            continue
        problems.extend(model_problems(spec, *inputs[key], key_label(trial.values, "linearize.budget", varied),
                                       counts))
    if not problems and cache is not None:
        for spec in seeds.values():
            try:
                load_splits(spec.data, spec.seed, cache)
            except UserError as exc:  # e.g. a group too small in this seed's split
                problems.extend(exc.problems)
    if problems:
        raise UserError(list(dict.fromkeys(problems)))
    if budgets is not None:
        budgets.update(counts.get("budgets", {}))
    return [summary for summary in summaries.values() if summary is not None]


def resource_problems(spec: Spec, resources: dict[str, float] | None, where: str) -> list[str]:
    """A trial asking for more CPUs or GPUs than any one node offers could never be scheduled."""
    if resources is None:
        return []
    res, problems = spec.resources, []
    if res.gpus_per_trial > resources.get("GPU", 0):
        problems.append(errors.RESOURCES_UNAVAILABLE.format(
            key="gpus_per_trial", need=res.gpus_per_trial, where=where, have=int(resources.get("GPU", 0)),
            unit="GPUs", hint="Use `--set resources.device=cpu --set resources.gpus_per_trial=0`."))
    if res.cpus_per_trial > resources.get("CPU", 0):
        problems.append(errors.RESOURCES_UNAVAILABLE.format(
            key="cpus_per_trial", need=res.cpus_per_trial, where=where, have=int(resources.get("CPU", 0)),
            unit="CPUs", hint="Lower resources.cpus_per_trial."))
    return problems


def model_problems(spec: Spec, input_shape: tuple[int, ...], num_classes: int, budget_key: str,
                   cache: dict[str, Any]) -> list[str]:
    """The architecture must take the data's inputs and the budget must be within the model's ReLUs
    (for DeepReDuce, within its configurations' range). `cache` keeps counts across trials."""

    args = base_model_args(spec, num_classes, input_shape[0])
    shape = "×".join(map(str, input_shape))
    model_key = json.dumps([args.arch, args.options, input_shape], sort_keys=True)
    if model_key not in cache:
        problem = input_problem(args.arch, input_shape, **args.options)
        if problem is None:
            with torch.device("meta"):  # shapes only: counting needs no compute
                model = args.build()
            cache[model_key] = count_relus(model, input_shape).total
        else:
            cache[model_key] = errors.INPUT_NOT_ACCEPTED.format(arch=args.arch, dataset=spec.data.dataset,
                                                                shape=shape, reason=problem)
    if isinstance(cache[model_key], str):
        return [cache[model_key]]
    total = cache[model_key]
    lin = spec.linearize
    budget = resolve_budget(lin.budget, total)
    cache.setdefault("budgets", {})[(args.arch, lin.budget)] = (budget, total)
    if budget > total:
        return [errors.BUDGET_RANGE.format(key=budget_key, total=total, value=lin.budget)]
    if lin.method != "deepreduce":
        return []
    dr = lin.deepreduce
    dr_key = json.dumps([model_key, dr.width_factors, dr.resolution_factors])
    if dr_key not in cache:
        counts = [c.relu_count for c in enumerate_configurations(args.arch, input_shape, args.options.get("width"),
                                                                 dr.width_factors, dr.resolution_factors,
                                                                 args.options)]
        cache[dr_key] = (min(counts), max(counts)) if counts else None
    if cache[dr_key] is None:
        return [errors.DR_NO_CONFIGURATION.format(arch=args.arch, shape=shape)]
    low, high = cache[dr_key]
    if budget < low:
        return [errors.DR_BUDGET_BELOW.format(key=budget_key, arch=args.arch, shape=shape, low=low, high=high,
                                              value=lin.budget, budget=budget)]
    return []


def describe_plan(plan: Plan, storage: Path | None = None) -> dict[str, Any]:
    """Trials, unique stages per kind, and how many of those are already stored."""
    store = StageStore(storage) if storage is not None else None
    out: dict[str, Any] = {"trials": len(plan.trials), "stages": {}}
    for kind in STAGE_KINDS:
        unique = plan.unique_stages(kind)
        stored = sum(store.has(s) for s in unique.values()) if store else 0
        out["stages"][kind] = {"unique": len(unique), "stored": stored}
    return out
