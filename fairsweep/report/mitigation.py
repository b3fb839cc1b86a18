"""The mitigation's figures: Figure 9 (the mitigated models against plain KD, per group and budget) and
Figure 15 (the µ ablation), each a function of a table of trial runs as in `fairsweep.report.figures`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fairsweep.report.figures import (BUDGET, MITIGATION, MU, PANELS, Drawn, GroupStyle, LeftOut, _bar_figure,
                                      _groups, _line, _panel_keys, _panels, _relu_axis, _stats, _trials,
                                      _with_relu_pct, plain_kd)


def _mitigated(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.drop(index=plain_kd(frame).index)
    if rows.empty:
        raise LeftOut("no mitigated trial (µ > 0, or finetune.mitigation: released_code) has finished")
    return rows


def mitigation_bars(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Figure 9: each group's relative accuracy drop of the mitigated model against its plain-KD twin
    (`mitigation_drop_pct/<g>`; negative: the mitigation helped) at each budget; a panel per µ (and
    mitigation, where the sweep has both) and method."""
    groups = _groups(_mitigated(frame), "mitigation_drop_pct")
    settings = [MU, *([MITIGATION] if MITIGATION in groups and groups[MITIGATION].nunique() > 1 else [])]
    fig, table = _bar_figure(groups, [*settings, *panels], "mitigation_drop_pct", None,
                             "relative drop vs plain KD (%)", "Mitigated against plain KD")
    for ax in fig.axes:
        ax.axhline(0, color="gray", linewidth=0.6)
    return Drawn(fig, {"groups": table})


def _algorithm1(frame: pd.DataFrame) -> pd.DataFrame:
    """Algorithm 1's trials (µ = 0 is plain KD), where the sweep ran some budget at two µ or more."""
    rows = frame[frame[MITIGATION] == "algorithm1"] if MITIGATION in frame else frame
    if rows[MU].nunique() < 2:
        raise LeftOut(f"the sweep has one µ ({', '.join(f'{m:g}' for m in sorted(rows[MU].unique()))}) under "
                      "Algorithm 1: an ablation needs two or more")
    if rows.groupby(BUDGET)[MU].nunique().max() < 2:  # a search's points: every µ at a budget of its own
        raise LeftOut("no budget was run at two µ or more under Algorithm 1: an ablation compares µ at a budget")
    return rows


def mu_ablation(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Figure 15: each group's relative accuracy drop against the base model at each budget, a panel per µ
    of Algorithm 1 (µ = 0: plain KD, Figure 6), a row per method; the panels share their y axis."""
    groups = _groups(_algorithm1(frame), "group_drop_pct")
    style = GroupStyle(groups)
    rows = _panels(groups, panels)
    mus = sorted(groups[MU].unique())
    fig = Figure(figsize=(3.3 * len(mus) + 1.8, 3.4 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(mus), squeeze=False, sharey=True)
    tables = []
    for r, (name, part) in enumerate(rows):
        keys = [*_panel_keys(part, panels), BUDGET, MU]
        trials = _trials(part)
        stats = _with_relu_pct(_stats(part, [*keys, "group"], ["group_drop_pct"]), trials, keys)
        tables.append(stats)
        for c, mu in enumerate(mus):
            ax = axes[r, c]
            at = stats[stats[MU] == mu]
            if at.empty:  # this method was not run at this µ
                ax.set_axis_off()
                continue
            for group in style.order:
                line = at[at["group"] == group]
                _line(ax, line["relu_pct_mean"], line, "group_drop_pct", color=style.colour[group],
                      label=style.label[group])
            ax.axhline(0, color="gray", linewidth=0.6)
            ax.set_title(f"{name + ', ' if name else ''}µ = {mu:g}{' (plain KD)' if mu == 0 else ''}", fontsize=10)
            _relu_axis(ax, stats["relu_pct_mean"])
        axes[r, 0].set_ylabel("relative accuracy drop (%)")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return Drawn(fig, {"groups": pd.concat(tables, ignore_index=True)})


MU_EFFECTS = {"acc": "test accuracy", "worst_group_acc": "worst group's accuracy",
              "drop_gap_pct": "drop gap (max − min group drop, points)"}


def mu_effects(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """The µ ablation at a glance: overall accuracy, the worst group's accuracy and the gap between the
    groups' drops against µ, a line per budget (and method)."""
    trials = _algorithm1(frame)
    metrics = [m for m in MU_EFFECTS if m in trials and trials[m].notna().any()]
    fig = Figure(figsize=(4.2 * len(metrics) + 1.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    keys = [*_panel_keys(trials, panels), BUDGET, MU]
    stats = _with_relu_pct(_stats(trials, keys, metrics), trials, keys).sort_values(keys, kind="stable")
    lines = stats.groupby(keys[:-1], sort=False)
    colours = {k: f"C{i % 10}" for i, k in enumerate(sorted(lines.groups, key=lambda k: np.atleast_1d(k)[-1]))}
    for ax, metric in zip(axes, metrics):
        for key, line in lines:
            label = f"{line['relu_pct_mean'].mean():.3g}% ReLUs" + "".join(
                f", {v}" for v in np.atleast_1d(key)[:-1])
            _line(ax, line[MU], line, metric, color=colours[key], label=label)
        ax.set_xlabel("µ (Algorithm 1's multiplier step)")
        ax.set_ylabel(MU_EFFECTS[metric])
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return Drawn(fig, {"trials": stats})
