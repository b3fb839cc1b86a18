"""What a run holds besides MLflow's own bookkeeping: the spec as flat dotted params, the group sizes,
the curves' keys, the trial's dataset as MLflow dataset inputs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fairsweep.data import dataset_info, data_root
from fairsweep.errors import UserError
from fairsweep.metrics.values import safe_key
from fairsweep.spec import Spec

DATASET_SOURCE_TYPE = "fairsweep"  # a dataset of the registry: {"dataset": name, "root": dir for file datasets}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and None become their JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


def group_size_metrics(group_sizes: dict[str, dict[str, int]]) -> dict[str, int]:
    """`group_size/<split>/<g>`: the samples of each group in each split (the paper prints them)."""
    return {f"group_size/{split}/{safe_key(g)}": n for split, sizes in group_sizes.items() for g, n in sizes.items()}


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
    source: dict[str, str] = {"dataset": data.dataset}
    if not dataset_info(data.dataset).embedded:
        try:
            source["root"] = str(data_root(data).resolve())
        except UserError:  # no root known here (the trial's worker had one): the name alone
            pass
    drawn = {"seed": spec.seed, **data.model_dump(mode="json", include={"target", "group", "imbalance",
                                                                        "val_fraction", "test_fraction"})}
    inputs = []
    for split, sizes in group_sizes.items():
        identity = json.dumps({**drawn, "split": split}, sort_keys=True)
        digest = f"{data_digest}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        profile = {"num_rows": sum(sizes.values()), "group": data.group, "group_sizes": sizes}
        dataset = Dataset(name=data.dataset, digest=digest, source_type=DATASET_SOURCE_TYPE,
                          source=json.dumps(source), profile=json.dumps(profile))
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, split)]))
    return inputs
