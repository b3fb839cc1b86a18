"""One reader of a sweep's results: a tidy table (one row per finished trial: its varied values, its
seed, every metric), from trial records or from MLflow's runs, and the mean ± std over seeds that
`fairsweep run` prints, `fairsweep pareto` ranks and the analysis scripts plot."""

from __future__ import annotations

import math
from collections.abc import Iterable

from fairsweep.sweep.records import TrialRecord

# The printed table's metrics, as they exist: mitigation_drop_pct only where a sweep has twins
TABLE_METRICS = ("acc", "worst_group_acc", "drop_gap_pct", "minority_drop_pct", "majority_drop_pct",
                 "mitigation_drop_pct", "relu_count")


def records_frame(records: Iterable[TrialRecord], keys: list[str]):
    """One row per record: `trial_id`, the values of `keys` (the sweep's varied keys), `seed` and every metric."""
    import pandas as pd

    rows = []
    for record in records:
        row = {"trial_id": record.trial_id, **{k: _cell(record.values.get(k)) for k in keys},
               "seed": record.spec["seed"]}
        row.update(record.metrics)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["trial_id", *keys, "seed"])


def runs_frame(runs: list[dict], keys: list[str]):
    """The same table from MLflow trial runs ({"run_id", "params", "metrics"}): params hold text."""
    import pandas as pd

    rows = [{"run_id": run["run_id"], **{k: parameter_value(run["params"].get(k, "")) for k in keys},
             "seed": parameter_value(run["params"].get("seed", "")), **run["metrics"]} for run in runs]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", *keys, "seed"])


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
    grouped = frame.groupby(keys, sort=True) if keys else frame.assign(_all=0).groupby("_all")
    stats = grouped[metrics].agg(["mean", "std", "count"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    return stats.reset_index(drop=not keys)


def _cell(value):
    """A varied value as a table cell: lists and mappings as their text (pandas groups by hashable values)."""
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value, sort_keys=True)
    return value if not (isinstance(value, float) and math.isnan(value)) else None
