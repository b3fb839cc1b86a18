"""A sweep's Pareto front with the seed std of each point, and, for an Optuna search, the importance of
each searched key for each objective and the hypervolume history: functions of a table of trial runs
(`runs_frame`) as in `fairsweep.report.figures`.

The Optuna trials are the searched configurations, each the mean of its seeds (what the study was told),
so the search's figures need no study: importance is Optuna's fANOVA (seeded, so the same runs give the
same numbers) on an in-memory study of those means, and the history orders the configurations by when
their last seed finished (the run's end time in MLflow), with the reference point `fairsweep pareto`
uses by default, so its last value is `fairsweep pareto`'s hypervolume.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fairsweep.report.figures import Drawn, LeftOut
from fairsweep.sweep.pareto import (default_reference, draw_front, front_of, hypervolume, non_dominated,
                                    seed_statistics, to_minimize)

IMPORTANCE_SEED = 0


def _configurations(frame: pd.DataFrame, config_keys: list[str], objectives: dict[str, str]) -> pd.DataFrame:
    """Per configuration: its keys, `<m>_mean`, `<m>_std` of each objective and `seeds`."""
    means, spread = seed_statistics(frame, config_keys, objectives)
    table = means[[*config_keys]].copy() if config_keys else pd.DataFrame(index=means.index)
    for metric in objectives:
        table[f"{metric}_mean"], table[f"{metric}_std"] = means[metric], spread[metric]
    table["seeds"] = means["seeds"]
    return table


def front_figure(frame: pd.DataFrame, config_keys: list[str], objectives: dict[str, str]) -> Drawn:
    """The configurations (seed means) by the first two objectives, coloured by the third, the
    non-dominated ones numbered and outlined, each with the seed std of both axes as error bars."""
    front = front_of(frame, config_keys, objectives)
    if not front.on_front.any():
        raise LeftOut(f"no configuration has every objective ({', '.join(objectives)})")
    names = list(objectives)
    numbered = front.numbered()
    points, configurations = int(numbered["point"].max()), len(numbered)
    title = (f"{points} non-dominated point{'s' * (points != 1)} ({configurations} configuration"
             f"{'s' * (configurations != 1)}) of {len(front.table)}")
    fig = draw_front(front, names[0], names[1], names[2] if len(names) > 2 else None, title)
    table = _configurations(frame, config_keys, objectives)
    table.insert(0, "non_dominated", front.on_front)
    table.insert(0, "point", numbered["point"].reindex(table.index).astype("Int64"))
    table = table.sort_values(["non_dominated", "point"], ascending=[False, True], kind="stable")
    reference = ", ".join(f"{m} {v:.6g}" for m, v in zip(names, front.reference))
    note = f"Hypervolume {front.hypervolume:.6g} against the reference point ({reference})."
    return Drawn(fig, {"configurations": table.reset_index(drop=True)}, note)


def hypervolume_history(frame: pd.DataFrame, config_keys: list[str], objectives: dict[str, str]) -> Drawn:
    """The hypervolume of the front of the configurations finished so far, after each one."""
    if "end_time" not in frame:
        raise LeftOut("the runs carry no end times to order the configurations by")
    means, _ = seed_statistics(frame, config_keys, objectives)
    finished = frame.groupby(config_keys, sort=True, dropna=False)["end_time"].max().to_numpy()
    values = means[list(objectives)].to_numpy(dtype=float)
    complete = np.isfinite(values).all(1)
    if complete.sum() < 1:
        raise LeftOut(f"no configuration has every objective ({', '.join(objectives)})")
    order = np.flatnonzero(complete)[np.argsort(finished[complete], kind="stable")]
    points = to_minimize(values[order], list(objectives.values()))
    reference = default_reference(points)
    volumes = [hypervolume(points[: n + 1][non_dominated(points[: n + 1])], reference) for n in range(len(points))]
    table = means.iloc[order][config_keys].reset_index(drop=True)
    table.insert(0, "configurations", np.arange(1, len(order) + 1))
    table["hypervolume"] = volumes
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.step(table["configurations"], volumes, where="post", color="C0")
    ax.plot(table["configurations"], volumes, "o", color="C0", markersize=4)
    ax.set_xlabel("Optuna trials finished (configurations, in the order their last seed finished)")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"Hypervolume of {', '.join(f'{m} ({d})' for m, d in objectives.items())}", fontsize=10)
    ax.grid(alpha=0.3)
    return Drawn(fig, {"history": table})


def _inferred(values: pd.Series):
    """An Optuna distribution holding every value of a searched key (a spec's own is better: see `importances`)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if pd.api.types.is_numeric_dtype(values):
        low, high = float(values.min()), float(values.max())
        return FloatDistribution(low, high if high > low else low + 1.0)
    return CategoricalDistribution(sorted(values.astype(str).unique()))


def _choice(value, distribution):
    """A logged value (text, or the number it reads as) as the distribution's own choice."""
    return next((c for c in distribution.choices if str(c) == str(value)), value)


def importances(frame: pd.DataFrame, objectives: dict[str, str], space: dict | None = None) -> Drawn:
    """The importance (fANOVA; each objective's sums to 1) of each searched key for each objective.
    `space` maps the searched keys to their Optuna distributions (`fairsweep.sweep.search.distribution`
    of the spec's `sweep.search.space`); without it they are inferred from the values."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator

    keys = list(space) if space is not None else [k for k in frame if k.count(".")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per in-memory study
    means, _ = seed_statistics(frame, keys, objectives)
    means = means[np.isfinite(means[list(objectives)].to_numpy(dtype=float)).all(1)]
    if len(means) < 2:
        raise LeftOut(f"importance needs two or more configurations with every objective; the sweep has {len(means)}")
    space = dict(space) if space is not None else {k: _inferred(means[k]) for k in keys}
    study = optuna.create_study(directions=["maximize" if d == "max" else "minimize" for d in objectives.values()])
    for _, row in means.iterrows():
        params = {k: _choice(row[k], d) if isinstance(d, CategoricalDistribution) else row[k] for k, d in space.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space,
                                                  values=[float(row[m]) for m in objectives]))
    table = pd.DataFrame({"key": keys})
    notes = []
    for i, metric in enumerate(objectives):
        if means[metric].nunique() < 2:  # nothing to explain
            table[metric] = math.nan
            notes.append(f"`{metric}` is the same in every configuration: no importance")
            continue
        found = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED), target=lambda t, i=i: t.values[i])
        table[metric] = table["key"].map(found)
    fig = Figure(figsize=(6.4, 0.9 + 0.55 * len(keys) * max(1, len(objectives) / 2)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(objectives)
    for i, metric in enumerate(objectives):
        ax.barh(np.arange(len(keys)) + (i - (len(objectives) - 1) / 2) * height, table[metric].fillna(0), height,
                label=f"{metric} ({objectives[metric]})", color=f"C{i}")
    ax.set_yticks(range(len(keys)), keys)
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA; sums to 1 per objective)")
    ax.set_title(f"What each searched key explains, over {len(means)} configurations", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return Drawn(fig, {"importance": table}, notes=notes)
