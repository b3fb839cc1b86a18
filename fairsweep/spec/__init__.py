"""The sweep spec: YAML in, typed and validated pydantic models out.

This is the only module that knows YAML, and it depends on nothing of fairsweep but `errors`: it
checks what a spec says on its own (types, ranges, keys, the consistency of one section). What
needs the registries or the data — whether a dataset, an architecture exists, which attributes a
dataset has, whether a budget fits the model — is checked before any work by the sweep's
pre-flight (`fairsweep.sweep.preflight`). Every mistake becomes one paragraph naming the key, the
bad value and what is accepted; all of a spec's mistakes are reported together, as a `UserError`
(exit status 2). Every field's description is what `docs/spec.md` shows (generated from here).
"""

from __future__ import annotations

import copy
import math
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fairsweep import errors
from fairsweep.errors import UserError
from fairsweep.spec.sections import (LINEARIZATION_METHODS, OBJECTIVE_METRICS, BaseConfig, CsvConfig, DataConfig,
                                     DeepReduceConfig, DiagnosticsConfig, Direction, FinetuneConfig, Imbalance,
                                     LinearizeConfig, ModelConfig, OptimConfig, RandomConfig, ResourcesConfig,
                                     SearchConfig, SearchParam, Section, SNLConfig, Spec, SweepConfig, TrackingConfig,
                                     set_dotted)

__all__ = ["LINEARIZATION_METHODS", "OBJECTIVE_METRICS", "BaseConfig", "CsvConfig", "DataConfig", "DeepReduceConfig",
           "DiagnosticsConfig", "Direction", "FinetuneConfig", "Imbalance", "LinearizeConfig", "ModelConfig",
           "OptimConfig", "RandomConfig", "ResourcesConfig", "SNLConfig", "SearchConfig", "SearchParam", "Section",
           "Spec", "SweepConfig", "TrackingConfig", "apply_overrides", "field_at", "has_finetune_stage", "load_spec",
           "objective_problems", "read_yaml", "set_dotted", "unknown_key", "validate_spec"]


def has_finetune_stage(spec: Spec) -> bool:
    """DeepReDuce's training is its finetuning: it runs the finetune stage only when asked to."""
    return spec.linearize.method != "deepreduce" or spec.linearize.deepreduce.finetune


# ---------------------------------------------------------------------------------------------
# loading, overrides, and turning pydantic errors into paragraphs


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    raw = read_yaml(path)
    raw = apply_overrides(raw, overrides)
    try:
        return validate_spec(raw)
    except UserError as exc:  # a single `--set` value is the user's, not "a grid value"
        raise UserError([_as_written(problem, overrides) for problem in exc.problems]) from None


def _as_written(problem: str, overrides: list[str] | tuple[str, ...]) -> str:
    """`problem` naming the `--set KEY=VALUE` the user wrote where it names the grid entry it became."""
    for item in overrides:
        key, _, text = item.partition("=")
        if not text.strip().startswith("["):
            problem = re.sub(rf"^`sweep\.grid\.{re.escape(key.strip())}` value [^:]*: ", f"`--set {item}`: ", problem)
    return problem


def read_yaml(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if path.is_dir():
        specs = ", ".join(sorted(p.name for p in path.glob("*.y*ml"))[:12]) or "none"
        raise UserError(errors.SPEC_IS_DIRECTORY.format(path=path, specs=specs))
    if not path.is_file():
        raise UserError(errors.SPEC_NOT_FOUND.format(path=path, resolved=path.resolve()))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(errors.SPEC_NOT_YAML.format(path=path, reason=exc)) from None
    if not isinstance(raw, dict):
        raise UserError(errors.SPEC_NOT_MAPPING.format(path=path, kind=type(raw).__name__))
    raw.setdefault("name", path.stem)
    return raw


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`--set a.b=c`: YAML-parsed values; a list for a scalar key (or any value for a key already in
    the grid) sets that key's grid values, e.g. `--set finetune.mu=[0,0.01]` or `--set seed=0`."""
    raw = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(errors.BAD_OVERRIDE.format(item=item))
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        sweep = raw.setdefault("sweep", {})
        grid = sweep.setdefault("grid", {}) if isinstance(sweep, dict) else {}
        if key != "sweep" and not key.startswith("sweep.") and (
            key in grid or (isinstance(value, list) and not _is_list_field(key))
        ):
            grid[key] = value if isinstance(value, list) else [value]
        else:
            set_dotted(raw, key.split("."), value)
    if problems:
        raise UserError(problems)
    return raw


def validate_spec(raw: dict) -> Spec:
    problems: list[str] = []
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_paragraphs(exc))
        spec = None
    sweep = raw.get("sweep") if isinstance(raw.get("sweep"), dict) else {}
    if isinstance(sweep.get("grid"), dict):
        problems.extend(_grid_problems(raw, sweep["grid"]))
    search = sweep.get("search")
    if isinstance(search, dict):
        if sweep.get("grid"):
            problems.append(errors.GRID_AND_SEARCH)
        if isinstance(search.get("space"), dict):
            problems.extend(_space_problems(raw, search["space"]))
        if isinstance(search.get("objectives"), dict):
            problems.extend(objective_problems(search["objectives"], "sweep.search.objectives"))
    if problems:
        raise UserError(list(dict.fromkeys(problems)))
    assert spec is not None
    return spec


def _grid_problems(raw: dict, grid: dict) -> list[str]:
    """Check each grid key exists and each of its values is valid in place of the default, and that the
    grid is not too large to plan (checked before any trial is built)."""
    sizes = {key: len(values) for key, values in grid.items() if isinstance(values, list)}
    if math.prod(sizes.values()) > errors.MAX_GRID_TRIALS:
        return [errors.GRID_TOO_LARGE.format(count=math.prod(sizes.values()),
                                             sizes=" × ".join(f"{n} {key}" for key, n in sizes.items()))]
    problems = []
    for key, values in grid.items():
        key_problem = _varied_key_problem("grid", key)
        if key_problem:
            problems.append(key_problem)
            continue
        if not isinstance(values, list) or not values:
            problems.append(errors.BAD_VALUE.format(key=f"sweep.grid.{key}", reason="expected a non-empty list",
                                                    value=errors.Shown(values)))
            continue
        problems.extend(_value_problems(raw, f"sweep.grid.{key}", key, values))
    return problems


def _space_problems(raw: dict, space: dict) -> list[str]:
    """Check each search-space key exists and its probe values (low, high, every choice) are valid."""
    problems = []
    for key, param in space.items():
        key_problem = _varied_key_problem("search.space", key)
        if key == "seed":
            key_problem = errors.SEED_IN_SPACE
        if key_problem:
            problems.append(key_problem)
            continue
        try:
            probes = SearchParam.model_validate(param).probes()
        except ValidationError:
            continue  # reported by the spec's own validation
        problems.extend(_value_problems(raw, f"sweep.search.space.{key}", key, probes))
    return problems


def objective_problems(metrics, where: str) -> list[str]:
    """Objectives must be metrics a trial record holds."""
    return [f"`{where}`: " + errors.unknown_name("objective metric", metric, OBJECTIVE_METRICS)
            for metric in metrics if metric not in OBJECTIVE_METRICS]


def _varied_key_problem(where: str, key: str) -> str | None:
    """A grid or search-space key must be a spec key outside `sweep`."""
    if key == "sweep" or key.startswith("sweep."):
        return f"`sweep.{where}.{key}`: a sweep cannot vary its own settings."
    if field_at(key) is None:
        parent, _, leaf = key.rpartition(".")
        return unknown_key(f"sweep.{where}.{key}", parent, leaf)
    return None


def _value_problems(raw: dict, label: str, key: str, values: list[Any]) -> list[str]:
    """Each value, set at `key` in place of the spec's own, must make a valid spec."""
    problems = []
    for value in values:
        trial = copy.deepcopy(raw)
        trial["sweep"] = {}
        set_dotted(trial, key.split("."), value)
        try:
            Spec.model_validate(trial)
        except ValidationError as exc:
            for err in exc.errors():  # only the value's own: another key's mistake is reported at that key
                where = ".".join(str(p) for p in err["loc"] if not _is_union_branch(p))
                if where == key or where.startswith(key + "."):
                    problems.append(f"`{label}` value {errors.Shown(value)!r}: {_reason(err)}.")
    return problems


def _paragraphs(exc: ValidationError) -> list[str]:
    out = []
    for err in _one_per_union(exc.errors()):
        loc = [str(p) for p in err["loc"] if not _is_union_branch(p)]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            out.append(unknown_key(key, ".".join(loc[:-1]), loc[-1]))
        elif err["type"] == "missing":
            out.append(f"`{key}` is required.")
        else:
            out.append(errors.BAD_VALUE.format(key=key or "spec", reason=_reason(err),
                                               value=errors.Shown(err.get("input"))))
    return out


def _is_union_branch(part: Any) -> bool:
    """pydantic names the branch of a union it tried (`Imbalance`, `literal['default']`) in an error's location."""
    return isinstance(part, str) and (part[:1].isupper() or part.startswith(("literal[", "function-")))


def _one_per_union(errs: list[dict]) -> list[dict]:
    """pydantic reports a value that fits no member of a union (`imbalance: Imbalance | null | 'default'`)
    once per member. Where a member is a section and the value a mapping, what is wrong inside it is the
    mistake; otherwise the members' reasons become one error ("... or ...")."""
    out: list[dict] = []
    unions: dict[tuple, list[dict]] = {}
    for err in errs:
        loc = err["loc"]
        branch = next((i for i, part in enumerate(loc) if _is_union_branch(part)), None)
        if branch is None:
            out.append(err)
        else:
            unions.setdefault(tuple(loc[:branch]), []).append({**err, "branch_depth": len(loc) - branch})
    for loc, members in unions.items():
        inside = [e for e in members if e["branch_depth"] > 1]  # errors within a section member's fields
        if inside:
            out.extend(inside)
        else:
            reasons = " or ".join(dict.fromkeys(_reason(e) for e in members))
            out.append({"type": "union", "loc": loc, "msg": reasons, "input": members[0].get("input")})
    return out


def unknown_key(key: str, parent: str, leaf: str) -> str:
    """An unknown key's paragraph: the closest valid key, and — for an option another section holds (as
    `linearize.lr`, which is SNL's: `linearize.snl.lr`) — where it lives."""
    valid = _valid_keys(parent)
    hint = errors.did_you_mean(leaf, valid)
    elsewhere = [f"{parent}.{name}.{leaf}" for name in valid
                 if (sub := _model_at(f"{parent}.{name}" if parent else name)) is not None and leaf in sub.model_fields]
    if elsewhere:
        hint = f" (it is an option of a section here: {', '.join(f'`{k}`' for k in elsewhere)})"
    return errors.UNKNOWN_KEY.format(key=key, hint=hint, valid=", ".join(valid))


def _reason(err: dict) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = msg.rstrip(".")  # the problem's sentence ends with its own period
    return msg[0].lower() + msg[1:] if msg else msg


def _model_at(dotted: str) -> type[BaseModel] | None:
    model: type[BaseModel] = Spec
    for part in [p for p in dotted.split(".") if p]:
        field = model.model_fields.get(part)
        sub = _section_type(field.annotation) if field else None
        if sub is None:
            return None
        model = sub
    return model


def field_at(dotted: str):
    """The pydantic field at a dotted spec key (`finetune.mu`), or None if there is none."""
    parent, _, leaf = dotted.rpartition(".")
    model = _model_at(parent)
    return None if model is None else model.model_fields.get(leaf)


def _valid_keys(dotted_parent: str) -> list[str]:
    model = _model_at(dotted_parent)
    return sorted(model.model_fields) if model else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_list_field(dotted: str) -> bool:
    field = field_at(dotted)
    if field is None:
        return False
    ann = field.annotation
    return typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in typing.get_args(ann))
