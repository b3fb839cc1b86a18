"""The sweep spec: YAML in, typed and validated pydantic models out.

This is the only module that knows YAML. Every mistake becomes one paragraph naming the key,
the bad value and what is accepted; all of a spec's mistakes are reported together, as a
`UserError` (exit status 2), before any work starts.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fairsweep import errors
from fairsweep.errors import UserError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _registered(what: str, name: str, names: list[str]) -> str:
    if name not in names:
        raise ValueError(errors.unknown_name(what, name, names))
    return name


class Imbalance(Section):
    """Keep a fraction of some classes, as the paper does to unbalance CIFAR-10."""

    minority_classes: list[int] = Field(min_length=1)
    minority_keep: float = Field(gt=0, le=1)
    majority_keep: float = Field(default=1.0, gt=0, le=1)


class CsvConfig(Section):
    """The CSV of an `imagefolder_csv` dataset: one row per image."""

    path: str = "labels.csv"  # relative to the data root
    file_column: str = "file"  # image paths, relative to the CSV's folder
    target_column: str = "target"
    group_column: str = "group"
    classes: list[str] | None = None  # target values in class order; None: the values found, sorted
    groups: list[str] | None = None  # group values in order; a value not listed is an error. None: all found


class DataConfig(Section):
    """Which data, and how it is split. Leaving out `target`, `group` or `imbalance` gives the
    dataset's defaults: its first target attribute, group = target, and (CIFAR-10) the paper's
    imbalance."""

    dataset: str = "digits"
    root: str | None = None  # directory of a real dataset (else $FAIRSWEEP_DATA); embedded ones need none
    target: str = "class"
    group: str = "class"
    imbalance: Imbalance | None = None
    val_fraction: float = Field(default=0.15, gt=0, lt=1)  # of all samples; of the training set for
    # datasets that ship a test set (cifar10, svhn)
    test_fraction: float | None = Field(default=None, gt=0, lt=1)  # None: the dataset's own (published
    # test set, or 20 % for utkface as the paper, 25 % otherwise)
    min_group_size: int = Field(default=5, ge=1)  # fewest samples of any group in any split
    batch_size: int = Field(default=64, ge=1)
    augment: bool = True  # image datasets: random crop (4 px padding) and flip (not for svhn's digits)
    image_size: int = Field(default=32, ge=4)  # utkface, imagefolder_csv: images are resized to this square
    age_bins: list[int] = Field(default=[2, 13, 18, 65], min_length=2)  # utkface: lower edges of the
    # age bins (the paper's 2-12, 13-17, 18-64, 65+); younger faces are left out when age is used
    csv: CsvConfig = CsvConfig()  # imagefolder_csv only

    @model_validator(mode="before")
    @classmethod
    def _dataset_defaults(cls, raw: Any) -> Any:
        from fairsweep.data import DATASETS

        name = raw.get("dataset", "digits") if isinstance(raw, dict) else None
        if not isinstance(name, str) or name not in DATASETS.names():
            return raw  # not a dict, or an unknown dataset that the field validator reports
        info = DATASETS.get(name)
        raw = dict(raw)
        raw.setdefault("target", info.targets[0])
        raw.setdefault("group", raw["target"] if raw["target"] in info.groups else info.groups[0])
        if "imbalance" not in raw and info.default_imbalance is not None:
            raw["imbalance"] = info.default_imbalance
        return raw

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from fairsweep.data import list_datasets

        return _registered("dataset", name, list_datasets())

    @field_validator("age_bins")
    @classmethod
    def _increasing(cls, edges: list[int]) -> list[int]:
        if edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("age bins are increasing lower edges in years, e.g. [2, 13, 18, 65]")
        return edges

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        from fairsweep.data import dataset_info

        info = dataset_info(self.dataset)
        problems = []
        if self.target not in info.targets:
            problems.append(errors.unknown_name(f"target attribute of {self.dataset}", self.target, info.targets))
        if self.group not in info.groups:
            problems.append(errors.unknown_name(f"group attribute of {self.dataset}", self.group, info.groups))
        if self.test_fraction is not None and info.test_fraction is None:
            problems.append(f"{self.dataset} ships its own test set; leave test_fraction out")
        test_fraction = self.test_fraction if self.test_fraction is not None else (info.test_fraction or 0.0)
        if self.val_fraction + test_fraction >= 1:
            problems.append(f"val_fraction + test_fraction must be < 1, got {self.val_fraction + test_fraction}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ModelConfig(Section):
    arch: str = "small_cnn"
    width: int | None = Field(default=None, ge=1)  # channels of the first stage; None: the architecture's own
    # a ReLU after the stem; None: the architecture's own (our ResNets have one). false: the SNL authors'
    # ResNet, 491,520 ReLUs (ResNet-18) or 901,120 (ResNet-34) at 32×32, of which the paper's budgets are
    # fractions. Only for architectures that take it (resnet18, resnet34): the sweep's checks say so.
    stem_relu: bool | None = None

    def factory_kwargs(self) -> dict[str, Any]:
        """The `create_model` arguments this section sets; one left at None is the architecture's own."""
        return {key: value for key, value in (("width", self.width), ("stem_relu", self.stem_relu))
                if value is not None}

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, name: str) -> str:
        from fairsweep.models import list_models

        return _registered("architecture", name, list_models())


class OptimConfig(Section):
    """One optimization recipe: optimizer, learning rate, schedule, epochs."""

    epochs: int = Field(ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_every: int = Field(default=30, ge=1)  # epochs between decays, for schedule=step
    step_gamma: float = Field(default=0.1, gt=0, le=1)
    select: Literal["best_val", "last"] = "last"  # which epoch's model the stage keeps
    batch_size: int | None = Field(default=None, ge=1)  # None: data.batch_size


class BaseConfig(OptimConfig):
    """Training the base (all-ReLU) model from scratch."""

    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=0.05, gt=0)
    select: Literal["best_val", "last"] = "best_val"


class DeepReduceConfig(OptimConfig):
    """DeepReDuce: the reshaping factors to enumerate (with every culling and thinning option), and the
    KD training of the selected model (0.5·CE + 0.5·T²·KL, T = linearize.temperature)."""

    width_factors: list[Annotated[float, Field(gt=0)]] = Field(default=[1.0, 0.5], min_length=1)  # α
    resolution_factors: list[Annotated[float, Field(gt=0, le=1)]] = Field(default=[1.0, 0.5], min_length=1)  # ρ
    epochs: int = Field(default=200, ge=1)  # the published recipe's
    lr: float = Field(default=0.1, gt=0)
    select: Literal["best_val", "last"] = "best_val"


class LinearizeConfig(Section):
    """Linearizing the base model to a ReLU budget: SNL (the keys below), DeepReDuce (`deepreduce`), as
    described in DESIGN.md, or `random` (a seeded random subset of the units, no training)."""

    method: str = "snl"
    budget: float = Field(default=0.1, gt=0)  # < 1: fraction of the model's ReLUs; >= 1: a count
    lr: float = Field(default=1e-3, gt=0)  # Adam, on weights and gates
    lambda_init: float = Field(default=1e-5, gt=0)
    lambda_growth: float = Field(default=1.1, ge=1)
    lambda_warmup: int = Field(default=5, ge=0)  # epochs before λ may grow, as both SNL codebases
    threshold: float = Field(default=0.01, gt=0, lt=1)  # a gate above it counts as a live ReLU
    temperature: float = Field(default=4.0, gt=0)
    max_epochs: int = Field(default=300, ge=1)  # fail clearly if the budget is not reached by then
    deepreduce: DeepReduceConfig = DeepReduceConfig()

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from fairsweep.linearize import list_linearizers

        return _registered("linearization method", name, list_linearizers())

    @field_validator("budget")
    @classmethod
    def _whole_count(cls, budget: float) -> float:
        if budget >= 1 and budget != int(budget):
            raise ValueError(f"an absolute budget (>= 1) must be a whole number of ReLUs, got {budget!r}")
        return budget


class FinetuneConfig(OptimConfig):
    """KD finetuning of the linearized model; mu > 0 turns on the fairness-aware finetuning that
    `mitigation` names."""

    epochs: int = Field(default=20, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    mu: float = Field(default=0.0, ge=0)  # multiplier step; 0 is plain KD (under algorithm1)
    # algorithm1: the paper's Algorithm 1 (the penalty Σ λ_a·|L − L_a| carries gradient; λ grows by µ ×
    # the epoch's violation). released_code: what the paper's released code computes: the penalty is
    # detached (µ changes the logged multipliers, never the weights), the KD term is divided by the
    # number of classes, and λ grows by µ × the sum of the epoch's per-batch violations
    mitigation: Literal["algorithm1", "released_code"] = "algorithm1"
    temperature: float = Field(default=4.0, gt=0)
    batch_size: int | None = Field(default=256, ge=1)
    # re-initialize the linearized model's weights (masks kept) and train it with cross-entropy, no
    # teacher: the paper's Figure 2 comparison of two models trained from scratch
    from_scratch: bool = False


class DiagnosticsConfig(Section):
    """The paper's per-group diagnostics of a trial's final and base models (section 4, Theorem 4.4).

    Computed on the evaluation split, with at most `max_samples_per_group` samples of each group
    (drawn at random from the group's samples, seeded by the trial's seed: never the first ones in
    the data's order, which may be sorted by an attribute such as age), in eval mode, on the
    cross-entropy loss.
    """

    grad_norms: bool = True  # group_grad_norm/<g>: ‖∇θ mean loss over the group‖₂
    margins: bool = True  # group_margin/<g>: mean softmax top-1 − top-2 probability
    hessian: bool = True  # group_hessian_eig/<g>: top Hessian eigenvalue by power iteration on HVPs
    bound: bool = True  # bound/<g> and excess_loss/<g> (Theorem 4.4); needs grad_norms and hessian
    max_samples_per_group: int | None = Field(default=256, ge=1)  # a seeded random draw; None: every sample
    hessian_iters: int = Field(default=50, ge=1)
    hessian_tol: float = Field(default=1e-3, gt=0)  # stop when the estimate moves less than this, relatively

    @model_validator(mode="after")
    def _bound_inputs(self) -> DiagnosticsConfig:
        if self.bound and not (self.grad_norms and self.hessian):
            raise ValueError("`bound` needs the base model's gradient norms and Hessian eigenvalues: set "
                             "grad_norms and hessian to true, or bound to false")
        return self


# The scalar metrics of a trial record (DESIGN.md's contract) that a search or a Pareto front can
# optimize; per-group keys (`group_acc/<g>`) depend on the data and are left out.
OBJECTIVE_METRICS = ("acc", "worst_group_acc", "acc_gap", "drop_gap_pct", "relu_count", "relu_fraction",
                     "param_dist", "bound_holds_frac")
Direction = Literal["max", "min"]


class SearchParam(Section):
    """One dimension of a search space: `float` or `int` between low and high (log-uniform with
    `log: true`), or `categorical` over `choices`."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)  # a grid step within [low, high]; not with log
    choices: list[Any] | None = Field(default=None, min_length=1)

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

    space: dict[str, SearchParam] = Field(min_length=1)
    objectives: dict[str, Direction] = Field(min_length=1)
    n_trials: int = Field(default=20, ge=1)  # finished Optuna trials the study should hold
    seeds_per_trial: int = Field(default=1, ge=1)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    sampler_seed: int | None = 0  # None: unseeded, not reproducible


class SweepConfig(Section):
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values
    search: SearchConfig | None = None  # instead of the grid: an Optuna search
    max_concurrent_trials: int | None = Field(default=None, ge=1)

    @property
    def varied_keys(self) -> list[str]:
        """The spec keys this sweep varies: the grid's, or the search space's plus `seed`."""
        if self.search is not None:
            return [*self.search.space, "seed"]
        return list(self.grid)


class ResourcesConfig(Section):
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    max_failures: int = Field(default=1, ge=0)  # Ray Tune retries of a failed trial
    # epochs between a training stage's checkpoints (a retried trial resumes the stage from the last); 0: none
    checkpoint_every: int = Field(default=1, ge=0)
    address: str | None = None  # an existing Ray cluster; None starts a local one

    @model_validator(mode="after")
    def _gpu_reserved(self) -> ResourcesConfig:
        if self.device == "cuda" and self.gpus_per_trial == 0:
            raise ValueError("`device` is `cuda` but `gpus_per_trial` is 0, and Ray gives a trial no GPU it did "
                             "not reserve; set resources.gpus_per_trial (1, or e.g. 0.25 to share a GPU)")
        return self


class TrackingConfig(Section):
    uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None  # defaults to the sweep's name
    log_models: bool = True


class Spec(Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: int = Field(default=0, ge=0)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    base: BaseConfig = BaseConfig()
    linearize: LinearizeConfig = LinearizeConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    sweep: SweepConfig = SweepConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def content_hash(self) -> str:
        """Identity of what the sweep computes (resources and tracking do not change results)."""
        content = self.model_dump(mode="json", exclude={"resources", "tracking"})
        if content["sweep"]["search"] is None:  # grid sweeps keep the hashes they had before search existed
            del content["sweep"]["search"]
        else:  # raising n_trials continues the same search (its Optuna study and MLflow run)
            del content["sweep"]["search"]["n_trials"]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    def with_values(self, values: dict[str, Any]) -> Spec:
        """This spec with dotted keys set (a grid point, a search trial's seed); the grid or search is dropped."""
        raw = self.model_dump(mode="json")
        raw["sweep"]["grid"] = {}
        raw["sweep"]["search"] = None
        for key, value in values.items():
            _set_dotted(raw, key.split("."), value)
        return Spec.model_validate(raw)

    def grid_points(self) -> list[dict[str, Any]]:
        keys = list(self.sweep.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.sweep.grid[k] for k in keys))]


# ---------------------------------------------------------------------------------------------
# loading, overrides, and turning pydantic errors into paragraphs


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    raw = read_yaml(path)
    raw = apply_overrides(raw, overrides)
    return validate_spec(raw)


def read_yaml(path: str | Path) -> dict:
    path = Path(path).expanduser()
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
            _set_dotted(raw, key.split("."), value)
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
    """Check each grid key exists and each of its values is valid in place of the default."""
    problems = []
    for key, values in grid.items():
        key_problem = _varied_key_problem("grid", key)
        if key_problem:
            problems.append(key_problem)
            continue
        if not isinstance(values, list) or not values:
            problems.append(errors.BAD_VALUE.format(key=f"sweep.grid.{key}", reason="expected a non-empty list",
                                                    value=values))
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
    if _field_at(key) is None:
        parent, _, leaf = key.rpartition(".")
        valid = _valid_keys(parent)
        return errors.UNKNOWN_KEY.format(key=f"sweep.{where}.{key}", hint=errors.did_you_mean(leaf, valid),
                                         valid=", ".join(valid))
    return None


def _value_problems(raw: dict, label: str, key: str, values: list[Any]) -> list[str]:
    """Each value, set at `key` in place of the spec's own, must make a valid spec."""
    problems = []
    for value in values:
        trial = copy.deepcopy(raw)
        trial["sweep"] = {}
        _set_dotted(trial, key.split("."), value)
        try:
            Spec.model_validate(trial)
        except ValidationError as exc:
            for err in exc.errors():
                if ".".join(str(p) for p in err["loc"]).startswith(key):
                    problems.append(f"`{label}` value {value!r}: {_reason(err)}.")
    return problems


def _paragraphs(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            parent = ".".join(loc[:-1])
            valid = _valid_keys(parent)
            out.append(errors.UNKNOWN_KEY.format(key=key, hint=errors.did_you_mean(loc[-1], valid),
                                                 valid=", ".join(valid)))
        elif err["type"] == "missing":
            out.append(f"`{key}` is required.")
        else:
            out.append(errors.BAD_VALUE.format(key=key or "spec", reason=_reason(err), value=err.get("input")))
    return out


def _reason(err: dict) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = msg.rstrip(".")  # the problem's sentence ends with its own period
    return msg[0].lower() + msg[1:] if msg else msg


def _set_dotted(raw: dict, path: list[str], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def _model_at(dotted: str) -> type[BaseModel] | None:
    model: type[BaseModel] = Spec
    for part in [p for p in dotted.split(".") if p]:
        field = model.model_fields.get(part)
        sub = _section_type(field.annotation) if field else None
        if sub is None:
            return None
        model = sub
    return model


def _field_at(dotted: str):
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
    field = _field_at(dotted)
    if field is None:
        return False
    ann = field.annotation
    return typing.get_origin(ann) is list or any(typing.get_origin(a) is list for a in typing.get_args(ann))
