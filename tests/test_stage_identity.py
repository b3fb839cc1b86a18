"""The reviewed record of what each stage depends on: every field of the spec, changed on its own, changes
the identity of exactly the stages listed here (and so of their descendants), for each linearization method.

A field added to the spec fails `test_every_spec_field_is_reviewed` until it is listed below with what it
may change; a stage that starts to depend on a field it should not (a data root, a check, another method's
option) fails `test_a_field_changes_exactly_the_stages_it_is_listed_for`.
"""

import copy

import pytest
from pydantic import BaseModel

from fairsweep.data import ContentDigests
from fairsweep.spec import Spec, set_dotted, validate_spec
from fairsweep.sweep.plan import make_plan

BASE = {
    "name": "identity",
    "data": {"dataset": "glyphs", "group": "style", "test_fraction": 0.5, "augment": False},
    "model": {"arch": "small_cnn", "width": 4},
    "linearize": {"budget": 0.05},
    "diagnostics": {"bound": False},  # so that each of its inputs can be turned off alone
}
METHODS = ("snl", "deepreduce", "random")
NONE, ALL = "none", "all"  # ALL: the first stage (base), hence every stage
# field -> (another valid value, the stage it changes first: for every method, or per method)
REVIEWED = {
    "name": ("other", NONE),
    "seed": (1, "base"),
    "data.dataset": ("digits", "base"),
    "data.root": ("/elsewhere", NONE),  # where the files live is not what a stage computes
    "data.target": ("shape", NONE),  # the dataset's own default, written out
    "data.group": ("shape", "base"),
    "data.imbalance": ({"minority_classes": [0], "minority_keep": 0.5}, "base"),
    "data.val_fraction": (0.2, "base"),
    "data.test_fraction": (0.4, "base"),
    "data.min_group_size": (3, NONE),  # a check
    "data.batch_size": (32, "base"),  # the batch size of every recipe that sets none
    "data.augment": (True, "base"),
    "data.image_size": (16, NONE),  # glyphs is drawn at its own size: the content digest is unchanged
    "data.age_bins": ([0, 50], NONE),  # utkface's
    "data.csv.path": ("x.csv", NONE), "data.csv.file_column": ("f", NONE), "data.csv.target_column": ("t", NONE),
    "data.csv.group_column": ("g", NONE), "data.csv.classes": (["a"], NONE), "data.csv.groups": (["a"], NONE),
    "data.csv.allow_outside": (True, NONE),  # a check only: the images it lets load are the same data
    "model.arch": ("mlp", "base"),
    "model.width": (8, "base"),
    "model.stem_relu": (True, NONE),  # small_cnn has no stem ReLU (the pre-flight rejects the key)
    **{f"base.{key}": (value, "base") for key, value in (
        ("epochs", 2), ("optimizer", "adam"), ("lr", 0.1), ("momentum", 0.5), ("weight_decay", 0.0),
        ("schedule", "step"), ("step_every", 3), ("step_gamma", 0.5), ("select", "last"), ("batch_size", 16))},
    "linearize.method": ("random", "linearize"),
    "linearize.budget": (0.2, "linearize"),
    **{f"linearize.snl.{key}": (value, {"snl": "linearize", "deepreduce": NONE, "random": NONE}) for key, value in (
        ("lr", 0.05), ("lambda_init", 1e-3), ("lambda_growth", 1.2), ("lambda_warmup", 0), ("threshold", 0.02),
        ("temperature", 2.0), ("max_epochs", 50), ("batch_size", 16))},
    **{f"linearize.deepreduce.{key}": (value, {"snl": NONE, "deepreduce": "linearize", "random": NONE})
       for key, value in (
        ("width_factors", [1.0]), ("resolution_factors", [1.0]), ("temperature", 2.0), ("epochs", 3),
        ("optimizer", "adam"), ("lr", 0.01), ("momentum", 0.5), ("weight_decay", 0.0), ("schedule", "step"),
        ("step_every", 3), ("step_gamma", 0.5), ("select", "last"), ("batch_size", 16))},
    # asks for the finetune stage after DeepReDuce's own training
    "linearize.deepreduce.finetune": (True, {"snl": NONE, "deepreduce": "finetune", "random": NONE}),
    **{f"finetune.{key}": (value, {"snl": "finetune", "deepreduce": NONE, "random": "finetune"}) for key, value in (
        ("epochs", 3), ("optimizer", "adam"), ("lr", 0.01), ("momentum", 0.5), ("weight_decay", 0.0),
        ("schedule", "step"), ("step_every", 3), ("step_gamma", 0.5), ("select", "best_val"), ("temperature", 2.0),
        ("batch_size", 16), ("from_scratch", True))},
    # DeepReDuce's training is its finetuning step: µ and the mitigation drive it
    "finetune.mu": (0.01, {"snl": "finetune", "deepreduce": "linearize", "random": "finetune"}),
    "finetune.mitigation": ("released_code", {"snl": "finetune", "deepreduce": "linearize", "random": "finetune"}),
    **{f"diagnostics.{key}": (value, "diagnose") for key, value in (
        ("grad_norms", False), ("margins", False), ("hessian", False), ("bound", True),
        ("max_samples_per_group", 64), ("hessian_iters", 10), ("hessian_tol", 1e-2))},
    **{f"resources.{key}": (value, NONE) for key, value in (
        ("cpus_per_trial", 2.0), ("gpus_per_trial", 1.0), ("device", "auto"), ("max_failures", 3),
        ("checkpoint_every", 0), ("address", "auto"))},
    **{f"tracking.{key}": (value, NONE) for key, value in (
        ("uri", "http://127.0.0.1:5000"), ("experiment", "other"), ("log_models", False))},
}
ORDER = ("base", "linearize", "finetune")


def leaves(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the spec's sections that holds a value (not a section), `sweep` left out."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = next((t for t in (field.annotation, *getattr(field.annotation, "__args__", ()))
                        if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if key == "sweep":
            continue
        if section is not None and key != "data.imbalance":  # the imbalance is one value: a section or none
            out.extend(leaves(section, key + "."))
        else:
            out.append(key)
    return out


def test_every_spec_field_is_reviewed():
    assert sorted(leaves(Spec)) == sorted(REVIEWED)


def ids(raw: dict, digests: ContentDigests) -> dict[str, str]:
    trial = make_plan(validate_spec(raw), digests).trials[0]
    return {**{kind: stage.id for kind, stage in trial.stages.items()}, "diagnose": trial.base_diagnostics.id,
            "trial": trial.id}


def expected(first: str, before: dict[str, str], after: dict[str, str]) -> set[str]:
    """The stages whose identity a change to `first` changes: it, its descendants (in the trial before or
    after: a DeepReDuce trial has no finetune stage unless asked), and the trial."""
    if first == NONE:
        return set()
    if first == "diagnose":
        return {"diagnose", "trial"}
    kinds = {k for k in ORDER[ORDER.index(first):] if k in before or k in after} | {"trial"}
    return kinds | ({"diagnose"} if first == "base" else set())


@pytest.fixture(scope="module")
def digests():
    return ContentDigests()


@pytest.mark.parametrize("method", METHODS)
def test_a_field_changes_exactly_the_stages_it_is_listed_for(method, digests):
    raw = copy.deepcopy(BASE)
    raw["linearize"]["method"] = method
    if method == "deepreduce":
        raw["linearize"]["budget"] = 1000
    base = ids(raw, digests)
    wrong = {}
    for key, (value, first) in REVIEWED.items():
        first = first[method] if isinstance(first, dict) else first
        if key == "linearize.method" and method == "random":
            value = "snl"
        changed_raw = copy.deepcopy(raw)
        set_dotted(changed_raw, key.split("."), value)
        changed = ids(changed_raw, digests)
        moved = {kind for kind in set(base) | set(changed) if base.get(kind) != changed.get(kind)}
        if moved != expected(first, base, changed):
            wrong[key] = sorted(moved)
    assert wrong == {}
