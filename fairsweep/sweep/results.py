"""One reader of a sweep's results: a tidy table (one row per finished trial: its varied values, its
seed, every metric), from trial records or from MLflow's runs, the same per group (one row per trial
and group), and the mean ± std over seeds that `fairsweep run` prints, `fairsweep pareto` ranks and
`fairsweep report` and the analysis scripts plot."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from fairsweep.metrics.values import group_size_metrics
from fairsweep.sweep.records import TrialRecord

# The printed table's metrics, as they exist: mitigation_drop_pct only where a sweep has twins
TABLE_METRICS = ("acc", "worst_group_acc", "drop_gap_pct", "minority_drop_pct", "majority_drop_pct",
                 "mitigation_drop_pct", "relu_count")


def records_frame(records: Iterable[TrialRecord], keys: list[str]):
    """One row per record: `trial_id`, the values of `keys` (the sweep's varied keys; another key's
    value is the trial spec's), `seed`, every metric and, as MLflow has them, the group sizes."""
    import pandas as pd

    rows = []
    for record in records:
        row = {"trial_id": record.trial_id,
               **{k: _cell(record.values[k] if k in record.values else _spec_value(record.spec, k)) for k in keys},
               "seed": record.spec["seed"]}
        row.update(record.metrics)
        row.update(group_size_metrics(record.group_sizes))
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", *keys, "seed"])


def runs_frame(runs: list[dict], keys: list[str]):
    """The same table from MLflow trial runs ({"run_id", "params", "metrics"}, and "end_time" in ms where
    the run has one): params hold text."""
    import pandas as pd

    rows = [{"run_id": run["run_id"], **{k: parameter_value(run["params"].get(k, "")) for k in keys},
             "seed": parameter_value(run["params"].get("seed", "")),
             **({"end_time": run["end_time"]} if "end_time" in run else {}), **run["metrics"]} for run in runs]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", *keys, "seed"])


# The per-group metrics (`<name>/<g>` in a trial's metrics, see docs/metrics.md)
GROUP_METRICS = ("group_acc", "group_drop_pct", "group_grad_norm", "group_margin", "group_hessian_eig",
                 "base_group_grad_norm", "base_group_margin", "base_group_hessian_eig", "bound", "excess_loss",
                 "mitigation_drop_pct")
_GROUP_KEY = re.compile(rf"^({'|'.join(GROUP_METRICS)})/(.+)$")
_SIZE_KEY = re.compile(r"^group_size/(\w+)/(.+)$")  # group_size/<split>/<g> -> column <split>_size


def group_frame(frame):
    """One row per trial and group of a table of trials (`records_frame`, `runs_frame`): the trial's own
    columns (curves' keys, which hold a `/`, left out; `mitigation_drop_pct` is the group's), `group` (its key), each per-group metric the
    trial has as a column (`group_acc`, ...) and the group's samples per split (`train_size`,
    `test_size`, ...). Groups in order of training samples, most first. Derived where the trial has what
    they need (docs/metrics.md):

    - `base_group_acc`: the base model's accuracy on the group, `group_acc / (1 − group_drop_pct/100)`
      (0 where the drop is NaN: the base model got none of the group right);
    - `base_acc`: the base model's overall accuracy, its groups' weighted by their test samples, and
      `drop_pct`: the final model's relative drop against it, `(base_acc − acc) / base_acc × 100`;
    - `bound_holds`: 1.0 where the group's `excess_loss` is at most its Theorem 4.4 `bound`, else 0.0.
    """
    import numpy as np
    import pandas as pd

    columns = {c: m.groups() for c in frame.columns if (m := _GROUP_KEY.match(c))}
    columns.update({c: (f"{m[1]}_size", m[2]) for c in frame.columns if (m := _SIZE_KEY.match(c))})
    names = {name for name, _ in columns.values()}  # a group's `mitigation_drop_pct`, not the trial's
    trials = frame[[c for c in frame.columns if "/" not in c and c not in names]].reset_index(drop=True)
    if not columns:
        return trials.iloc[:0].assign(group=pd.Series(dtype=object))
    per_group = frame[list(columns)].reset_index(drop=True)
    per_group.columns = pd.MultiIndex.from_tuples(list(columns.values()))
    long = trials.join(per_group.stack(level=1, future_stack=True).rename_axis([None, "group"]).reset_index(level="group"))
    if {"group_acc", "group_drop_pct"} <= set(long):
        with np.errstate(divide="ignore", invalid="ignore"):
            base = long["group_acc"] / (1 - long["group_drop_pct"] / 100)
        long["base_group_acc"] = base.where(long["group_drop_pct"] != 100).mask(
            long["group_drop_pct"].isna() & long["group_acc"].notna(), 0.0)
        if {"test_size", "acc"} <= set(long):
            hits = (long["base_group_acc"] * long["test_size"]).groupby(level=0).agg(lambda s: s.sum(skipna=False))
            long["base_acc"] = hits / long["test_size"].groupby(level=0).sum()
            long["drop_pct"] = (long["base_acc"] - long["acc"]) / long["base_acc"] * 100
    if {"bound", "excess_loss"} <= set(long):
        long["bound_holds"] = (long["excess_loss"] <= long["bound"]).astype(float).where(
            long[["bound", "excess_loss"]].notna().all(axis=1))
    sizes = long.groupby("group")["train_size"].mean() if "train_size" in long else pd.Series(dtype=float)
    rank = {g: i for i, g in enumerate(sorted(long["group"].unique(), key=lambda g: (-sizes.get(g, 0.0), str(g))))}
    return long.sort_values("group", key=lambda s: s.map(rank), kind="stable").reset_index(drop=True)


def parameter_value(text: str):
    """A logged parameter back as the number it was, or as text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def results_table(frame, keys: list[str], metrics: Iterable[str] = TABLE_METRICS):
    """Mean, std and count over seeds of `metrics` (those the frame has) per combination of `keys` (the
    varied keys but the seed); one row for all where nothing else varies. None for an empty frame."""
    if frame.empty:
        return None
    metrics = [m for m in metrics if m in frame and frame[m].notna().any()]
    keys = [k for k in keys if k != "seed"]
    grouped = frame.groupby(keys, sort=True, dropna=False) if keys else frame.assign(_all=0).groupby("_all")
    stats = grouped[metrics].agg(["mean", "std", "count"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    return stats.reset_index(drop=not keys)


def _spec_value(spec: dict, key: str):
    """The value of a dotted key (`linearize.budget`) in a spec as JSON; None where it has none."""
    for part in key.split("."):
        spec = spec.get(part) if isinstance(spec, dict) else None
    return spec


def _cell(value):
    """A varied value as a table cell: lists and mappings as their text (pandas groups by hashable values)."""
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value, sort_keys=True)
    return value if not (isinstance(value, float) and math.isnan(value)) else None
