"""What a run holds besides MLflow's own bookkeeping: the spec as flat dotted params (those that apply to
the run), the group sizes, the curves' keys, the trial's dataset as MLflow dataset inputs."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from fairsweep.data import data_root, dataset_info
from fairsweep.data.checks import option_readers
from fairsweep.errors import UserError
from fairsweep.metrics.values import safe_key
from fairsweep.spec import LINEARIZATION_METHODS, Spec, has_finetune_stage

if TYPE_CHECKING:
    from fairsweep.sweep.plan import Trial  # the plan imports the data and model registries, hence torch


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1, "c": None, "d": {}}} -> {"a.b": 1}: None and {} set nothing and are left out; lists
    become their JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        elif value is not None:
            out[dotted] = param_value(value)
    return out


def param_value(value: Any) -> Any:
    """A value as an MLflow param: scalars as they are, anything else (a list, None) as its JSON text."""
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value)


def trial_params(trial: Trial, linearization: dict[str, Any]) -> dict[str, Any]:
    """A trial run's params: the keys of its (resolved) spec that apply to it, its varied values whatever they
    are, and what its linearization selected (`linearize.selected.*`, DeepReDuce's). Left out: the sections of
    the other linearization methods, the `data` keys only other datasets read (`data.root` of an embedded
    one), the finetuning recipe of a DeepReDuce trial without a finetune stage (its µ and mitigation drive
    DeepReDuce's training and stay), keys set to null, and the sweep section."""
    spec = trial.spec
    tree = spec.model_dump(mode="json", exclude={"sweep"})
    _drop_unread(tree, {spec.linearize.method}, {spec.data.dataset})
    if not has_finetune_stage(spec):
        tree["finetune"] = {key: tree["finetune"][key] for key in ("mu", "mitigation")}
    params = flatten(tree)  # the spec's typed values (µ 0 as 0.0), which its varied values keep where left out
    params.update({key: param_value(value) for key, value in trial.values.items() if key not in params})
    params.update(flatten(linearization, "linearize.selected."))
    return params


def sweep_params(spec: Spec, num_trials: int) -> dict[str, Any]:
    """The sweep run's params: its spec's keys that some trial reads (as `trial_params` leaves out, over the
    methods and datasets its trials take), less the varied ones, whose values are the grid's (`sweep.grid.*`,
    JSON lists) or the search's (`sweep.search.*`); and `sweep.num_trials`."""
    tree = spec.model_dump(mode="json", exclude={"sweep"})
    _drop_unread(tree, set(_taken(spec, "linearize.method")), set(_taken(spec, "data.dataset")))
    varied = spec.sweep.varied_keys
    params = {k: v for k, v in flatten(tree).items() if not any(k == key or k.startswith(key + ".") for key in varied)}
    params.update({f"sweep.grid.{k}": json.dumps(v) for k, v in spec.sweep.grid.items()})
    if spec.sweep.search is not None:
        params.update(flatten(spec.sweep.search.model_dump(mode="json"), "sweep.search."))
    params["sweep.num_trials"] = num_trials
    return params


def _taken(spec: Spec, key: str) -> list[Any]:
    """The values the sweep's trials take of a spec key: the grid's, a categorical search's choices, or the spec's."""
    search = spec.sweep.search
    if key in spec.sweep.grid:
        return spec.sweep.grid[key]
    if search is not None and key in search.space and search.space[key].choices is not None:
        return search.space[key].choices
    section, name = key.split(".")
    return [getattr(getattr(spec, section), name)]


def _drop_unread(tree: dict[str, Any], methods: set[str], datasets: set[str]) -> None:
    """Leave out of a spec's JSON the sections of linearization methods not in `methods` and the `data` keys
    that no dataset of `datasets` reads."""
    for method in LINEARIZATION_METHODS:
        if method not in methods:
            tree["linearize"].pop(method, None)
    for key, readers in option_readers().items():
        if not datasets & set(readers):
            tree["data"].pop(key, None)
    if all(dataset_info(name).embedded for name in datasets):
        tree["data"].pop("root", None)


def curve_key(key: str) -> str:
    """A stage history's key as an MLflow key: a per-group curve (`multiplier/<group>`) with the group's key."""
    head, slash, group = key.partition("/")
    return f"{head}/{safe_key(group)}" if slash else key


def dataset_inputs(spec: Spec, data_digest: str, group_sizes: dict[str, dict[str, int]]) -> list:
    """The trial's splits as MLflow dataset inputs (the UI's Datasets), their samples never read again: one
    per split, its context (`train`, `val`, `test`) a tag, its group composition the profile. MLflow keeps
    one dataset per name and digest in an experiment, so a split's digest is the data's content digest and
    a hash of what draws the split from it (seed, target, group, imbalance, fractions): trials on the same
    split share it, those on others (another seed) have theirs."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    data = spec.data
    # MLflow's source types: a file dataset's is `local`, its `uri` the data root (the UI shows it); an
    # embedded one's `code` (it ships with fairsweep's code). Both name the registry's dataset.
    source_type, source = "code", {"dataset": data.dataset}
    if not dataset_info(data.dataset).embedded:
        try:
            source_type, source = "local", {"uri": str(data_root(data).resolve()), **source}
        except UserError:  # no root known here (the trial's worker had one): the name alone
            pass
    drawn = {"seed": spec.seed, **data.model_dump(mode="json", include={"target", "group", "imbalance",
                                                                        "val_fraction", "test_fraction"})}
    inputs = []
    for split, sizes in group_sizes.items():
        identity = json.dumps({**drawn, "split": split}, sort_keys=True)
        digest = f"{data_digest}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        profile = {"num_rows": sum(sizes.values()), "group": data.group, "group_sizes": sizes}
        dataset = Dataset(name=data.dataset, digest=digest, source_type=source_type,
                          source=json.dumps(source), profile=json.dumps(profile))
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)]))
    return inputs
