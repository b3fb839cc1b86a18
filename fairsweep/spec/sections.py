"""The spec's sections as typed, validated pydantic models (the checks a section can make on its own).

Every field's description is what docs/spec.md shows (generated from here by docs/spec_reference.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from fairsweep import errors
from fairsweep.spec.section import Section
from fairsweep.spec.search_space import OBJECTIVE_METRICS, Direction, SearchConfig, SearchParam  # noqa: F401

# The linearization methods: each has a section of its own options under `linearize:` (the
# linearizer registry holds exactly these, a test checks it).
LINEARIZATION_METHODS = ("deepreduce", "random", "snl")


class Imbalance(Section):
    """Keep a fraction of some classes, as the paper does to unbalance CIFAR-10."""

    minority_classes: list[int] = Field(min_length=1, description="class indices whose samples are thinned")
    minority_keep: float = Field(gt=0, le=1, description="the fraction of each minority class kept")
    majority_keep: float = Field(default=1.0, gt=0, le=1, description="the fraction of every other class kept")


class CsvConfig(Section):
    """The CSV of an `imagefolder_csv` dataset: one row per image."""

    path: str = Field(default="labels.csv", description="the CSV, relative to the data root")
    file_column: str = Field(default="file", description="image paths, relative to the CSV's folder")
    target_column: str = Field(default="target", description="the target of each image")
    group_column: str = Field(default="group", description="the group of each image")
    classes: list[str] | None = Field(default=None, description="target values in class order; null: the values "
                                                                "found, sorted (a value not listed is an error)")
    groups: list[str] | None = Field(default=None, description="group values in order; null: all found (a value "
                                                               "not listed is an error)")
    allow_outside: bool = Field(default=False, description="let image paths resolve (`..`, absolute paths, "
                                "symlinks) outside the CSV's folder; false: such a line is an error naming it")


class DataConfig(Section):
    """Which data, and how it is split. `target`, `group`, `imbalance` and `test_fraction` left at their
    defaults take the dataset's own: its first target attribute, group = target where the target is a
    group attribute, the paper's imbalance for CIFAR-10, the published test set or the dataset's share."""

    dataset: str = Field(default="digits", description="a registered dataset (`fairsweep datasets` lists them)")
    root: str | None = Field(default=None, description="the directory of a real dataset; null: $FAIRSWEEP_DATA. "
                                                       "Embedded datasets need none")
    target: str | None = Field(default=None, description="the attribute to classify; null: the dataset's first")
    group: str | None = Field(default=None, description="the attribute whose groups are measured; null: the "
                                                        "target where it is one, else the dataset's first")
    imbalance: Imbalance | None | Literal["default"] = Field(
        default="default", description="classes to thin before splitting; `default`: the dataset's own (CIFAR-10: "
                                       "the paper's), null: none")
    val_fraction: float = Field(default=0.15, gt=0, lt=1, description="held out for model selection: of all "
                                "samples, or of the training set for datasets that ship a test set")
    test_fraction: float | None = Field(default=None, gt=0, lt=1, description="held out for the metrics; null: "
                                        "the published test set, 20 % for utkface as the paper, else 25 %")
    min_group_size: int = Field(default=5, ge=1, description="fewest samples any group may have in any split")
    batch_size: int = Field(default=64, ge=1, description="training batch size of the stages that set none")
    augment: bool = Field(default=True, description="image datasets: random crop (4 px padding) and flip "
                                                    "(svhn: no flip) of every training batch")
    image_size: int = Field(default=32, ge=4, description="utkface, imagefolder_csv: images resized to this square")
    age_bins: list[int] = Field(default=[2, 13, 18, 65], min_length=2, description="utkface: lower edges of the "
                                "age bins in years (the paper's 2-12, 13-17, 18-64, 65+); younger faces are left out")
    csv: CsvConfig = Field(default=CsvConfig(), description="imagefolder_csv only: the CSV's path and columns")

    @field_validator("age_bins")
    @classmethod
    def _increasing(cls, edges: list[int]) -> list[int]:
        if edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("age bins are increasing lower edges in years, e.g. [2, 13, 18, 65]")
        return edges

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.test_fraction is not None and self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {self.val_fraction + self.test_fraction}")
        return self


class ModelConfig(Section):
    arch: str = Field(default="small_cnn", description="a registered architecture (`fairsweep relus` counts one)")
    width: int | None = Field(default=None, ge=1, description="channels of the first stage (hidden units of an "
                                                              "mlp); null: the architecture's own")
    stem_relu: bool | None = Field(default=None, description="resnet18/34: a ReLU after the stem (false: the SNL "
                                   "authors' ResNet, whose ReLUs the paper's budgets count); null: the architecture's own")

    def factory_kwargs(self) -> dict[str, Any]:
        """The architecture factory's arguments this section sets (a key left out keeps the factory's default)."""
        return {key: value for key, value in (("width", self.width), ("stem_relu", self.stem_relu))
                if value is not None}


class OptimConfig(Section):
    """One optimization recipe: optimizer, learning rate, schedule, epochs."""

    epochs: int = Field(ge=1, description="training epochs")
    optimizer: Literal["sgd", "adam"] = Field(default="sgd", description="sgd (with momentum) or adam")
    lr: float = Field(gt=0, description="learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd's momentum")
    weight_decay: float = Field(default=5e-4, ge=0, description="L2 weight decay")
    schedule: Literal["cosine", "step", "constant"] = Field(default="cosine", description="learning-rate schedule")
    step_every: int = Field(default=30, ge=1, description="schedule=step: epochs between decays")
    step_gamma: float = Field(default=0.1, gt=0, le=1, description="schedule=step: the decay factor")
    select: Literal["best_val", "last"] = Field(default="last", description="which epoch's model the stage keeps: "
                                                "the best on the validation split, or the last")
    batch_size: int | None = Field(default=None, ge=1, description="null: data.batch_size")


class BaseConfig(OptimConfig):
    """Training the base (all-ReLU) model from scratch with cross-entropy."""

    epochs: int = Field(default=30, ge=1, description="training epochs")
    lr: float = Field(default=0.05, gt=0, description="learning rate")
    select: Literal["best_val", "last"] = Field(default="best_val", description="which epoch's model the stage keeps")


class SNLConfig(Section):
    """Selective Network Linearization: gates on every unit, trained with Adam on CE + KD + λ·Σ|α|."""

    lr: float = Field(default=1e-3, gt=0, description="Adam's learning rate, on weights and gates")
    lambda_init: float = Field(default=1e-5, gt=0, description="λ at the start")
    lambda_growth: float = Field(default=1.1, ge=1, description="λ's factor after an epoch whose live count did "
                                                                "not fall below its lowest")
    lambda_warmup: int = Field(default=5, ge=0, description="epochs before λ may grow (5, as both SNL codebases)")
    threshold: float = Field(default=0.01, gt=0, lt=1, description="a gate above it counts as a live ReLU")
    temperature: float = Field(default=4.0, gt=0, description="the KD temperature T")
    max_epochs: int = Field(default=300, ge=1, description="the stage fails, saying so, if the budget is not "
                                                           "reached by then")
    batch_size: int | None = Field(default=None, ge=1, description="null: data.batch_size")


class DeepReduceConfig(OptimConfig):
    """DeepReDuce: the reshaping factors to enumerate (with every culling and thinning option), and the
    training of the selected model: KD from the base model (0.5·CE + 0.5·T²·KL), which is DeepReDuce's
    finetuning step, so `finetune.mu` and `finetune.mitigation` apply here (Algorithm 1 replaces it)."""

    width_factors: list[Annotated[float, Field(gt=0)]] = Field(default=[1.0, 0.5], min_length=1,
                                                               description="channel factors α to enumerate")
    resolution_factors: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default=[1.0, 0.5], min_length=1, description="input-resolution factors ρ to enumerate, in (0, 1]")
    temperature: float = Field(default=4.0, gt=0, description="the KD temperature T")
    epochs: int = Field(default=200, ge=1, description="training epochs (the published recipe's)")
    lr: float = Field(default=0.1, gt=0, description="learning rate")
    select: Literal["best_val", "last"] = Field(default="best_val", description="which epoch's model the stage keeps")
    finetune: bool = Field(default=False, description="also run the finetune stage after DeepReDuce's training")


class RandomConfig(Section):
    """Random linearization: a seeded random subset of the units stays ReLU; no training, no options."""


class LinearizeConfig(Section):
    """Linearizing the base model to a ReLU budget with `method`; each method's options are its own
    section (`snl`, `deepreduce`, `random`), and only the chosen method's are part of what it computes."""

    method: str = Field(default="snl", description="snl, deepreduce or random")
    budget: int | float = Field(default=0.1, description="a fraction of the model's ReLUs (above 0, below 1, "
                                                         "e.g. 0.05) or a count (a whole number from 1, written "
                                                         "without a decimal point, e.g. 2048)")
    snl: SNLConfig = Field(default=SNLConfig(), description="SNL's options")
    deepreduce: DeepReduceConfig = Field(default=DeepReduceConfig(), description="DeepReDuce's options")
    random: RandomConfig = Field(default=RandomConfig(), description="random linearization (no options)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        if name not in LINEARIZATION_METHODS:
            raise ValueError(errors.unknown_name("linearization method", name, LINEARIZATION_METHODS))
        return name

    @field_validator("budget", mode="before")
    @classmethod
    def _fraction_or_count(cls, budget):
        """A budget reads one way only: a float below 1 is a fraction, an integer a count."""
        if isinstance(budget, bool) or not isinstance(budget, (int, float)):
            raise ValueError(f"{budget!r} is not a number: write a fraction of the ReLUs (above 0, below 1, e.g. "
                             "0.05) or a count (a whole number from 1, e.g. 2048)")
        if isinstance(budget, float) and budget >= 1:
            relus = "ReLU" if budget == 1 else "ReLUs"
            whole = f"a count of {int(budget)} {relus} (write {int(budget)})" if budget == int(budget) else \
                "no count (a count is a whole number)"
            raise ValueError(f"{budget!r} reads as a fraction of the ReLUs, which is below 1, or as {whole}; write "
                             "a fraction below 1 (e.g. 0.05) or a whole count without a decimal point (e.g. 2048)")
        if budget <= 0:
            raise ValueError(f"{budget!r} is neither a fraction of the ReLUs (above 0, below 1, e.g. 0.05) nor a "
                             "count (a whole number from 1, e.g. 2048)")
        return budget

    @property
    def options(self) -> SNLConfig | DeepReduceConfig | RandomConfig:
        """The chosen method's section."""
        return getattr(self, self.method)


class FinetuneConfig(OptimConfig):
    """KD finetuning of the linearized model; mu > 0 turns on the fairness-aware finetuning."""

    epochs: int = Field(default=20, ge=1, description="training epochs")
    lr: float = Field(default=1e-3, gt=0, description="learning rate")
    mu: float = Field(default=0.0, ge=0, description="the multipliers' step µ; 0 is plain KD")
    # algorithm1: the paper's Algorithm 1, the penalty with gradient. released_code: the paper's released
    # code — a detached penalty (µ changes only the multipliers), the KD term divided by the number of
    # classes, the multipliers grown by µ × the sum of the epoch's per-batch violations.
    mitigation: Literal["algorithm1", "released_code"] = Field(
        default="algorithm1", description="algorithm1 (the paper's Algorithm 1) or released_code (what the "
                                          "paper's released code computes; see docs/algorithms.md)")
    temperature: float = Field(default=4.0, gt=0, description="the KD temperature T")
    batch_size: int | None = Field(default=256, ge=1, description="the paper's 256; null: data.batch_size")
    from_scratch: bool = Field(default=False, description="re-initialize the linearized model (masks kept) and "
                               "train it with cross-entropy, no teacher: the paper's Figure 2 comparison")


class DiagnosticsConfig(Section):
    """The paper's per-group diagnostics of a trial's final and base models (section 4, Theorem 4.4).

    Computed on the evaluation split, in eval mode, on the cross-entropy loss, over at most
    `max_samples_per_group` samples of each group drawn at random (seeded by the trial's seed).
    """

    grad_norms: bool = Field(default=True, description="group_grad_norm/<g>: ‖∇θ mean loss over the group‖₂")
    margins: bool = Field(default=True, description="group_margin/<g>: mean softmax top-1 − top-2 probability")
    hessian: bool = Field(default=True, description="group_hessian_eig/<g>: top Hessian eigenvalue (power "
                                                    "iteration on Hessian-vector products)")
    bound: bool = Field(default=True, description="bound/<g>, excess_loss/<g>: Theorem 4.4; needs grad_norms "
                                                  "and hessian")
    max_samples_per_group: int | None = Field(default=256, ge=1, description="samples drawn per group; null: all")
    hessian_iters: int = Field(default=50, ge=1, description="at most this many power iterations")
    hessian_tol: float = Field(default=1e-3, gt=0, description="stop when the estimate moves less than this, "
                                                               "relatively")

    @model_validator(mode="after")
    def _bound_inputs(self) -> DiagnosticsConfig:
        if self.bound and not (self.grad_norms and self.hessian):
            raise ValueError("`bound` needs the base model's gradient norms and Hessian eigenvalues: set "
                             "grad_norms and hessian to true, or bound to false")
        return self


class SweepConfig(Section):
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted spec key -> values; every "
                                                                         "combination is a trial")
    search: SearchConfig | None = Field(default=None, description="instead of the grid: an Optuna search")
    max_concurrent_trials: int | None = Field(default=None, ge=1, description="null: as many as the resources allow")

    @property
    def varied_keys(self) -> list[str]:
        """The spec keys this sweep varies: the grid's, or the search space's plus `seed`."""
        if self.search is not None:
            return [*self.search.space, "seed"]
        return list(self.grid)


class ResourcesConfig(Section):
    cpus_per_trial: float = Field(default=1.0, gt=0, description="CPUs each trial reserves (torch's threads)")
    gpus_per_trial: float = Field(default=0.0, ge=0, description="GPUs each trial reserves (fractional to share)")
    device: Literal["cpu", "cuda", "auto"] = Field(default="cpu", description="where trials train")
    max_failures: int = Field(default=1, ge=0, description="Ray Tune's retries of a failed trial")
    checkpoint_every: int = Field(default=1, ge=0, description="epochs between a training stage's checkpoints "
                                                               "(a retry resumes from the last); 0: none")
    address: str | None = Field(default=None, description="an existing Ray cluster (auto, HOST:PORT); null: a "
                                                          "local Ray")

    @model_validator(mode="after")
    def _gpu_reserved(self) -> ResourcesConfig:
        if self.device == "cuda" and self.gpus_per_trial == 0:
            raise ValueError("`device` is `cuda` but `gpus_per_trial` is 0, and Ray gives a trial no GPU it did "
                             "not reserve; set resources.gpus_per_trial (1, or e.g. 0.25 to share a GPU)")
        return self


class TrackingConfig(Section):
    uri: str = Field(default="sqlite:///mlflow.db", description="MLflow's tracking URI")
    experiment: str | None = Field(default=None, description="null: the spec's name")
    log_models: Literal["all", "front", "none"] = Field(
        default="front", description="which trials' final models MLflow gets a copy of (the stage store keeps "
        "every one): `all`; `front`, those of the sweep's Pareto front when it ends (`fairsweep pareto --register` "
        "logs any other it registers); `none`. true and false mean all and none")

    @field_validator("log_models", mode="before")
    @classmethod
    def _log_models_bool(cls, value: Any) -> Any:
        """The values of the boolean this key once was: true logs all, false none."""
        return {True: "all", False: "none"}.get(value, value) if isinstance(value, bool) else value


class Spec(Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="the sweep's name; default: the "
                                                                            "spec file's name")
    seed: int = Field(default=0, ge=0, description="the seed (varied by the grid as `seed`)")
    data: DataConfig = Field(default=DataConfig(), description="which data, and how it is split")
    model: ModelConfig = Field(default=ModelConfig(), description="the architecture")
    base: BaseConfig = Field(default=BaseConfig(), description="training the base (all-ReLU) model")
    linearize: LinearizeConfig = Field(default=LinearizeConfig(), description="linearizing it to a ReLU budget")
    finetune: FinetuneConfig = Field(default=FinetuneConfig(), description="finetuning the linearized model (µ)")
    diagnostics: DiagnosticsConfig = Field(default=DiagnosticsConfig(), description="the per-group diagnostics")
    sweep: SweepConfig = Field(default=SweepConfig(), description="the grid or the search")
    resources: ResourcesConfig = Field(default=ResourcesConfig(), description="what each trial runs on")
    tracking: TrackingConfig = Field(default=TrackingConfig(), description="MLflow")

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def content_hash(self) -> str:
        """Identity of what the sweep computes (resources and tracking do not change results)."""
        # data.csv.allow_outside only allows a check to pass: the data, when loaded, is the same
        content = self.model_dump(mode="json", exclude={"resources": True, "tracking": True,
                                                        "data": {"csv": {"allow_outside"}}})
        if content["sweep"]["search"] is None:
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
            set_dotted(raw, key.split("."), value)
        return Spec.model_validate(raw)

    def grid_points(self) -> list[dict[str, Any]]:
        keys = list(self.sweep.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.sweep.grid[k] for k in keys))]


def set_dotted(raw: dict, path: list[str], value: Any) -> None:
    node = raw
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value
