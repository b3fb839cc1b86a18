"""The Pareto front of a finished sweep: seed means per configuration, the non-dominated ones, their
hypervolume against a reference point, and a plot.

Objectives are `metric -> "max" | "min"`. Internally every objective is turned into one to minimize
(maximized ones negated), so "dominates" means no worse in every objective and better in one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fairsweep import errors
from fairsweep.errors import UserError
from fairsweep.spec import objective_problems
from fairsweep.sweep.results import records_frame, runs_frame

# the front of a grid sweep, unless told otherwise: accuracy against the disparity and the ReLU count
GRID_OBJECTIVES = {"acc": "max", "drop_gap_pct": "min", "relu_count": "min"}
REFERENCE_MARGIN = 0.1  # the default reference point lies this fraction of each objective's range beyond its worst


def to_minimize(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """(n, m) objective values -> the same with every maximized column negated."""
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return np.asarray(values, dtype=float) * signs


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of the points (n, m), all minimized, that no other point dominates. Equal points do not
    dominate each other, so ties are all kept."""
    p = np.asarray(points, dtype=float)
    no_worse = (p[:, None, :] <= p[None, :, :]).all(-1)  # [j, i]: j is no worse than i everywhere
    better = (p[:, None, :] < p[None, :, :]).any(-1)  # [j, i]: j is better than i somewhere
    return ~(no_worse & better).any(0)


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact volume dominated by `points` (n, m), all minimized, and bounded by `reference` (m,).
    Points not strictly better than the reference in every objective add nothing."""
    p = np.asarray(points, dtype=float).reshape(-1, len(reference))
    ref = np.asarray(reference, dtype=float)
    p = p[(p < ref).all(1)]
    return _hypervolume(p, ref) if len(p) else 0.0


def _hypervolume(p: np.ndarray, ref: np.ndarray) -> float:
    if p.shape[1] == 1:
        return float(ref[0] - p[:, 0].min())
    if p.shape[1] == 2:  # sweep along the first objective, adding one rectangle per step down the second
        volume, lowest = 0.0, ref[1]
        for x, y in p[np.argsort(p[:, 0], kind="stable")]:
            if y < lowest:
                volume += (ref[0] - x) * (lowest - y)
                lowest = y
        return volume
    # slice along the last objective: between consecutive values, the points at or below the slice
    # dominate the (m-1)-dimensional volume of their projection
    p = p[np.argsort(p[:, -1], kind="stable")]
    tops = np.append(p[1:, -1], ref[-1])
    volume = 0.0
    for i in range(len(p)):
        height = tops[i] - p[i, -1]
        if height > 0:
            below = p[: i + 1, :-1]
            volume += _hypervolume(below[non_dominated(below)], ref[:-1]) * height
    return volume


def default_reference(points: np.ndarray) -> np.ndarray:
    """The worst value of each (minimized) objective, moved out by REFERENCE_MARGIN of its range (of its
    magnitude, or 1, where all points agree), so every point adds volume."""
    p = np.asarray(points, dtype=float)
    worst, spread = p.max(0), p.max(0) - p.min(0)
    spread = np.where(spread > 0, spread, np.maximum(np.abs(worst), 1.0))
    return worst + REFERENCE_MARGIN * spread


@dataclass
class Front:
    """The seed-averaged configurations of a sweep and which of them are non-dominated."""

    table: "pd.DataFrame"  # noqa: F821  one row per configuration: config keys, objective means, seeds, run_ids
    config_keys: list[str]
    objectives: dict[str, str]
    on_front: np.ndarray  # bool per row; False for rows with a missing objective too
    reference: np.ndarray  # in the objectives' own directions (as a user writes it)
    hypervolume: float
    spread: "pd.DataFrame | None" = None  # noqa: F821  the objectives' std over seeds, a row per row of `table`

    @property
    def front(self):
        return self.table[self.on_front]

    def numbered(self):
        """The front's configurations with `point` first: 1, 2, … per distinct objective means, shared by
        tied configurations (identical means: one point of the plot), in the front's order."""
        rows = self.front.copy()
        ids: dict[tuple, int] = {}
        keys = rows[list(self.objectives)].itertuples(index=False, name=None)
        rows.insert(0, "point", [ids.setdefault(tuple(key), len(ids) + 1) for key in keys])
        return rows


def seed_means(runs: list[dict], config_keys: list[str], objectives: dict[str, str]):
    """One row per configuration (the values of `config_keys`, seeds left out): the mean of each
    objective over its seeds, the number of seeds and their MLflow run ids. `runs` are the sweep's
    trial runs as {"run_id", "params", "metrics"}."""
    return seed_statistics(runs_frame(runs, config_keys), config_keys, objectives)[0]


def seed_statistics(frame, config_keys: list[str], objectives: dict[str, str]):
    """`seed_means` of a table of trial runs (`runs_frame`), and beside it the objectives' std over the
    seeds (NaN for one seed), a row per configuration in the same order."""
    frame = frame.copy()
    for metric in objectives:
        if metric not in frame:
            frame[metric] = math.nan
    keys = config_keys or ["configuration"]
    if not config_keys:
        frame["configuration"] = "all"
    grouped = frame.groupby(keys, sort=True, dropna=False)
    table = grouped[list(objectives)].mean()
    spread = grouped[list(objectives)].std().reset_index(drop=True)
    table["seeds"] = grouped["run_id"].count()
    table["run_ids"] = grouped["run_id"].agg(lambda ids: sorted(ids))
    return table.reset_index(), spread


def pareto_front(runs: list[dict], config_keys: list[str], objectives: dict[str, str],
                 reference: list[float] | None = None) -> Front:
    """The non-dominated configurations of a sweep after seed averaging, and their hypervolume against
    `reference` (objective values in their own directions; default: see `default_reference`)."""
    return front_of(runs_frame(runs, config_keys), config_keys, objectives, reference)


def front_of(frame, config_keys: list[str], objectives: dict[str, str], reference: list[float] | None = None) -> Front:
    """`pareto_front` of a table of trial runs (`runs_frame`)."""
    table, spread = seed_statistics(frame, config_keys, objectives)
    directions = list(objectives.values())
    values = table[list(objectives)].to_numpy(dtype=float)
    complete = np.isfinite(values).all(1)
    points = to_minimize(values[complete], directions)
    on_front = np.zeros(len(table), dtype=bool)
    on_front[np.flatnonzero(complete)[non_dominated(points)]] = True
    if reference is None:
        ref = default_reference(points) if len(points) else np.full(len(objectives), math.nan)
    else:
        ref = to_minimize(np.asarray(reference, dtype=float), directions)
    volume = hypervolume(points[non_dominated(points)], ref) if len(points) else 0.0
    return Front(table, config_keys, objectives, on_front, to_minimize(ref, directions), volume, spread)


def plot_front(front: Front, x: str, y: str, color: str | None, path: Path, title: str) -> Path:
    """`draw_front`, saved to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_front(front, x, y, color, title).savefig(path, dpi=120, bbox_inches="tight")
    return path


def draw_front(front: Front, x: str, y: str, color: str | None, title: str):
    """Every configuration as a point (x, y), coloured by a third metric; dominated points faint; the
    seed std of x and y as error bars where there are two seeds or more. A matplotlib Figure."""
    from matplotlib.figure import Figure

    table = front.table
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.subplots()
    if front.spread is not None and front.spread[[x, y]].notna().any().any():
        for on, alpha in ((False, 0.25), (True, 0.8)):
            rows = front.on_front == on
            ax.errorbar(table.loc[rows, x], table.loc[rows, y], xerr=front.spread.loc[rows, x],
                        yerr=front.spread.loc[rows, y], fmt="none", ecolor="gray", alpha=alpha, elinewidth=1,
                        capsize=2, zorder=1, label="seed std" if on else None)
    for on, alpha, edge in ((False, 0.25, "none"), (True, 1.0, "black")):
        rows = table[front.on_front == on]
        if rows.empty:
            continue
        shade = ({"c": rows[color], "cmap": "viridis", "vmin": table[color].min(), "vmax": table[color].max()}
                 if color else {"c": "tab:blue" if on else "tab:gray"})
        scatter = ax.scatter(rows[x], rows[y], alpha=alpha, edgecolors=edge, s=40 if on else 25, zorder=2,
                             label="non-dominated" if on else "dominated", **shade)
    numbered = front.numbered()
    for _, first in numbered.drop_duplicates("point").iterrows():  # each point keyed to its row of the table
        ax.annotate(str(first["point"]), (first[x], first[y]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if color:
        fig.colorbar(scatter, ax=ax, label=f"{color} ({front.objectives[color]})")
    ax.set_xlabel(f"{x} ({front.objectives[x]})")
    ax.set_ylabel(f"{y} ({front.objectives[y]})")
    ax.set_title(title)
    ax.legend(loc="best")
    return fig


def front_trials(spec, records) -> list[str]:
    """The ids of the trials on a sweep's Pareto front (the spec's objectives, `choose_objectives`; seed means
    per configuration of its varied keys), from its trial records: what `fairsweep pareto` finds in MLflow."""
    keys = spec.sweep.varied_keys
    frame = records_frame(records, keys).rename(columns={"trial_id": "run_id"})  # the ids column front_of reads
    front = front_of(frame, [k for k in keys if k != "seed"], choose_objectives(spec, []))
    return [trial_id for ids in front.front["run_ids"] for trial_id in ids]


def choose_objectives(spec, options: list[str]) -> dict[str, str]:
    """`--objective METRIC:max|min` options if given, else the search's objectives, else GRID_OBJECTIVES."""
    if not options:
        return dict(spec.sweep.search.objectives) if spec.sweep.search is not None else dict(GRID_OBJECTIVES)
    objectives, problems = {}, []
    for item in options:
        metric, _, direction = item.partition(":")
        if direction not in ("max", "min"):
            problems.append(errors.BAD_OBJECTIVE.format(item=item))
        else:
            objectives[metric.strip()] = direction
    problems.extend(objective_problems(objectives, "--objective"))
    if not problems and len(objectives) < 2:
        problems.append(errors.FEW_OBJECTIVES.format(objectives=", ".join(objectives)))
    if problems:
        raise UserError(problems)
    return objectives


def parse_reference(text: str | None, objectives: dict[str, str]) -> list[float] | None:
    """`--reference 0.5,40,500`: one number per objective, in their order."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != len(objectives):
        raise UserError(errors.BAD_REFERENCE.format(value=text, count=len(objectives), objectives=", ".join(objectives),
                                                    example=",".join(["0"] * len(objectives))))
    return values
