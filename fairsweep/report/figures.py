"""The paper's per-group figures of a sweep, each a function of a table of its trial runs (`runs_frame`
of the runs MLflow holds; `records_frame` of trial records works too) that returns the figure and the
numbers it shows.

Every bar and point is a mean over seeds and its error bar the std over seeds (none for one seed).
The models of Figures 1, 3–8 are the plain-KD ones (µ = 0 under Algorithm 1), as in the paper;
Theorem 4.4's check takes every trial; Figures 9 and 15 the mitigated ones. `panels` names the columns
whose every combination gets a panel of its own (default: the linearization method). A figure the
trials cannot give raises `LeftOut`, which says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from fairsweep.sweep.results import group_frame, results_table

BUDGET, METHOD, MU, MITIGATION = "linearize.budget", "linearize.method", "finetune.mu", "finetune.mitigation"
PANELS = (METHOD,)
BASE = "base"  # the base model's cluster of bars, beside the budgets'
# why a per-group metric can be missing, beside its name
MISSING = {"group_grad_norm": "diagnostics.grad_norms is off", "base_group_grad_norm": "diagnostics.grad_norms is off",
           "group_margin": "diagnostics.margins is off", "group_hessian_eig": "diagnostics.hessian is off",
           "base_group_hessian_eig": "diagnostics.hessian is off", "bound": "diagnostics.bound is off",
           "mitigation_drop_pct": "no mitigated trial has a finished plain-KD twin",
           "test_size": "the trials were logged without their group sizes"}


class LeftOut(Exception):
    """A figure these trials cannot give; the message says why."""


@dataclass
class Drawn:
    """A figure and the numbers it shows: per table, the keys of each bar or point, then `<m>_mean`,
    `<m>_std` and `<m>_count` (seeds) of each metric, as `results_table` gives them."""

    figure: Figure
    tables: dict[str, pd.DataFrame]
    note: str = ""  # a sentence for the figure's caption
    notes: list[str] = field(default_factory=list)  # what the figure leaves out of what it could show


def plain_kd(frame: pd.DataFrame) -> pd.DataFrame:
    """The trials finetuned by plain KD: µ = 0 under Algorithm 1."""
    plain = frame[MU] == 0
    if MITIGATION in frame:
        plain &= frame[MITIGATION] == "algorithm1"
    return frame[plain]


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    rows = plain_kd(frame)
    if rows.empty:
        raise LeftOut("no finished trial was finetuned by plain KD (µ = 0 under Algorithm 1)")
    return rows


def _groups(frame: pd.DataFrame, *metrics: str) -> pd.DataFrame:
    """`group_frame` of the trials, which must have every one of `metrics`."""
    groups = group_frame(frame)
    for metric in metrics:
        if metric not in groups or groups[metric].isna().all():
            why = f" ({MISSING[metric]})" if metric in MISSING else ""
            raise LeftOut(f"the trials have no `{metric}/<g>` metric{why}")
    return groups


def _stats(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds per combination of `keys`, groups (if a key) in `frame`'s order."""
    stats = results_table(frame, keys, metrics)
    if "group" in keys:
        rank = {g: i for i, g in enumerate(dict.fromkeys(frame["group"]))}
        stats = stats.sort_values([k for k in keys if k != "group"] + ["group"],
                                  key=lambda s: s.map(rank) if s.name == "group" else s, kind="stable")
    return stats.reset_index(drop=True)


def _panels(frame: pd.DataFrame, panels) -> list[tuple[str, pd.DataFrame]]:
    """(title, trials) per combination of the `panels` columns, e.g. ("snl", ...), ("snl, model.width=8", ...)."""
    keys = [k for k in panels if k in frame]
    if not keys:
        return [("", frame)]
    return [(", ".join(_value_label(k, v) for k, v in zip(keys, values)), part)
            for values, part in frame.groupby(keys, sort=True, dropna=False)]


def _value_label(key: str, value) -> str:
    if key in (METHOD, MITIGATION):
        return str(value)
    return f"µ = {value:g}" if key == MU else f"{key}={value}"


def _panel_keys(frame: pd.DataFrame, panels) -> list[str]:
    return [k for k in panels if k in frame]


class GroupStyle:
    """One colour and legend label per group, the same in every figure: groups by training samples, most
    first; a minority (fewer than half the largest group's training samples, as `minority_drop_pct`) says so."""

    def __init__(self, groups: pd.DataFrame):
        self.order = list(dict.fromkeys(groups["group"]))
        colours = [f"C{i}" for i in range(10)] if len(self.order) <= 10 else list(colormaps["tab20"].colors)
        self.colour = {g: colours[i % len(colours)] for i, g in enumerate(self.order)}
        train = groups.groupby("group")["train_size"].mean() if "train_size" in groups else pd.Series(dtype=float)
        test = groups.groupby("group")["test_size"].mean() if "test_size" in groups else pd.Series(dtype=float)
        largest = train.max() if len(train) else np.nan
        self.label = {}
        for g in self.order:
            minority = " (minority)" if g in train and train[g] < largest / 2 else ""
            size = f", n={test[g]:.0f}" if g in test else ""
            self.label[g] = f"{g}{minority}{size}"


def _trials(groups: pd.DataFrame) -> pd.DataFrame:
    """One row per trial of a `group_frame`."""
    return groups.drop_duplicates("run_id" if "run_id" in groups else "trial_id")


def _budget_points(trials: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per combination of `keys` (a budget among them): the ReLUs kept, in % of the base model's."""
    kept = trials.assign(relu_pct=trials["relu_fraction"] * 100)
    return _stats(kept, keys, ["relu_pct", "relu_count"])


def _budget_label(row) -> str:
    return f"{row['relu_pct_mean']:.3g}% ReLUs\n({row['relu_count_mean']:,.0f})"


def _grouped_bars(ax, stats: pd.DataFrame, metric: str, categories: list[tuple], style: GroupStyle,
                  sizes: bool = False) -> None:
    """Bars of `metric` (mean ± std): a cluster per category (`stats["_category"]`), a bar per group."""
    groups = [g for g in style.order if g in set(stats["group"])]
    width = 0.8 / len(groups)
    for i, group in enumerate(groups):
        rows = stats[stats["group"] == group].set_index("_category").reindex([c for c, _ in categories])
        xs = np.arange(len(categories)) + (i - (len(groups) - 1) / 2) * width
        ax.bar(xs, rows[f"{metric}_mean"], width, yerr=rows[f"{metric}_std"], color=style.colour[group],
                      label=style.label[group], capsize=2, error_kw={"elinewidth": 0.8})
        if sizes and "test_size_mean" in rows:  # above the error bar, as the paper prints them
            tops = rows[f"{metric}_mean"] + rows[f"{metric}_std"].fillna(0)
            for x, top, n in zip(xs, tops, rows["test_size_mean"]):
                if np.isfinite(top) and np.isfinite(n):
                    ax.annotate(f"{n:.0f}", (x, top), xytext=(0, 2), textcoords="offset points", ha="center",
                                va="bottom", fontsize=6, rotation=90)
            ax.margins(y=0.1)
    ax.set_xticks(range(len(categories)), [label for _, label in categories], fontsize=8)
    ax.set_xlim(-0.5, len(categories) - 0.5)  # a budget no trial here finished keeps its place
    ax.grid(axis="y", alpha=0.3)


def _budget_clusters(groups: pd.DataFrame, keys: list[str], metric: str, base_metric: str | None,
                     extra: list[str] = (), among: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[tuple]]:
    """Stats of `metric` per budget and group (and of `base_metric`, the base model's, as a cluster of its
    own, first), and the clusters in order: the base model, then the budgets of `among` (default: of
    `groups`; a budget with no trial here is a gap) from the most ReLUs down."""
    stats = _stats(groups, [*keys, BUDGET, "group"], [metric, *extra])
    points = _budget_points(_trials(groups if among is None else among), [BUDGET])
    points = points.sort_values("relu_pct_mean", ascending=False)
    categories = [(b, _budget_label(row)) for b, (_, row) in zip(points[BUDGET], points.iterrows())]
    stats = stats.assign(_category=stats[BUDGET])
    if base_metric is not None:
        per_seed = groups.drop_duplicates(["seed", "group"])  # a seed's base model is every trial's of it
        base = _stats(per_seed.assign(**{metric: per_seed[base_metric]}), [*keys, "group"], [metric, *extra])
        stats = pd.concat([base.assign(_category=BASE), stats], ignore_index=True)
        categories.insert(0, (BASE, "base model\n(100%)"))
    return stats, categories


def _bar_figure(groups: pd.DataFrame, panels, metric: str, base_metric: str | None, ylabel: str, title: str,
                sizes: bool = False) -> tuple[Figure, pd.DataFrame]:
    style = GroupStyle(groups)
    parts = _panels(groups, panels)
    width = max(6.0, 0.22 * len(style.order) * (groups[BUDGET].nunique() + 1))
    fig = Figure(figsize=(width, 3.6 * len(parts)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(parts), 1, squeeze=False)[:, 0])
    tables = []
    extra = ["test_size"] if sizes and "test_size" in groups else []
    for ax, (name, part) in zip(axes, parts):
        keys = list(dict.fromkeys([*_panel_keys(part, panels), MU]))
        same_method = groups[groups[METHOD] == part[METHOD].iloc[0]] if METHOD in groups else groups
        stats, categories = _budget_clusters(part, keys, metric, base_metric, extra, among=same_method)
        _grouped_bars(ax, stats, metric, categories, style, sizes=sizes)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}{': ' + name if name else ''}", fontsize=10)
        table = stats.drop(columns=[BUDGET, "_category"])
        table.insert(len(keys), BUDGET, stats["_category"])  # `base`: the base model's
        tables.append(table)
    axes[0].legend(fontsize=7, ncol=min(5, len(style.order)), loc="lower left", bbox_to_anchor=(0, 1.08))
    return fig, pd.concat(tables, ignore_index=True)


def group_accuracy_bars(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Figure 1: each group's test accuracy at each ReLU budget and of the base model (100% of the ReLUs),
    plain KD; the group's test samples above its bars."""
    groups = _groups(_plain(frame), "group_acc", "base_group_acc")
    fig, table = _bar_figure(groups, panels, "group_acc", "base_group_acc", "test accuracy", "Group accuracy",
                             sizes=True)
    return Drawn(fig, {"groups": table})


def gradient_norm_bars(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Figure 3: the gradient norm of each group's loss, ‖∇θ J(θ̃; S_g)‖, at each budget and of the base model."""
    groups = _groups(_plain(frame), "group_grad_norm", "base_group_grad_norm")
    fig, table = _bar_figure(groups, panels, "group_grad_norm", "base_group_grad_norm", "‖∇θ J(θ̃; S_g)‖",
                             "Gradient norm of the group's loss")
    return Drawn(fig, {"groups": table})


def hessian_bars(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Figure 4: the top eigenvalue of the Hessian of each group's loss, of the base model and at each budget."""
    groups = _groups(_plain(frame), "group_hessian_eig", "base_group_hessian_eig")
    fig, table = _bar_figure(groups, panels, "group_hessian_eig", "base_group_hessian_eig", "λmax(H_g)",
                             "Top Hessian eigenvalue of the group's loss")
    return Drawn(fig, {"groups": table})


def _line(ax, xs, stats: pd.DataFrame, metric: str, **style) -> None:
    """`metric`'s mean against `xs`, its std as error bars."""
    style = {"marker": "o", "markersize": 4, "capsize": 2, "elinewidth": 0.8, **style}
    ax.errorbar(xs, stats[f"{metric}_mean"], yerr=stats[f"{metric}_std"], **style)


def _relu_axis(ax, xs) -> None:
    xs = np.asarray(xs, dtype=float)
    if len(xs) and np.nanmin(xs) > 0 and np.nanmax(xs) / np.nanmin(xs) > 8:
        ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # 2×10³, 3×10³, ... would overlap
    ax.set_xlabel("ReLUs kept (% of the base model's)")
    ax.grid(alpha=0.3)


def _with_relu_pct(stats: pd.DataFrame, trials: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`stats` (per keys, a budget among them) with the ReLUs kept of each budget: `relu_pct_mean`, ..."""
    points = _budget_points(trials, keys)
    return stats.merge(points, on=keys, how="left").sort_values("relu_pct_mean", kind="stable")


def drop_by_budget(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Figures 5–7: per linearization method, the overall test accuracy against the ReLUs kept (the base
    model's as a red line), and the relative accuracy drop against the base model of each group and
    overall (`drop_pct`, dashed), plain KD."""
    groups = _groups(_plain(frame), "group_drop_pct")
    if "drop_pct" not in groups:
        raise LeftOut(f"no overall base accuracy to measure the drop against ({MISSING['test_size']})")
    style = GroupStyle(groups)
    parts = _panels(groups, panels)
    fig = Figure(figsize=(4.6 * len(parts) + 1.8, 7.2), layout="constrained")
    axes = fig.subplots(2, len(parts), squeeze=False)
    overall, per_group = [], []
    for col, (name, part) in enumerate(parts):
        keys = [*_panel_keys(part, panels), BUDGET, MU]
        trials = _trials(part)
        top, bottom = axes[0, col], axes[1, col]
        stats = _with_relu_pct(_stats(trials, keys, ["acc", "base_acc", "drop_pct"]), trials, keys)
        _line(top, stats["relu_pct_mean"], stats, "acc", color="black", label="linearized, plain KD")
        base = trials.drop_duplicates("seed")["base_acc"]
        top.axhline(base.mean(), color="red", linewidth=1, label=f"base model ({base.mean():.4f})")
        if len(base) > 1:
            top.axhspan(base.mean() - base.std(), base.mean() + base.std(), color="red", alpha=0.1, linewidth=0)
        top.set_ylabel("test accuracy")
        top.set_title(f"Global accuracy (Figure 5){': ' + name if name else ''}", fontsize=10)
        top.legend(fontsize=7)
        _relu_axis(top, stats["relu_pct_mean"])
        group_stats = _with_relu_pct(_stats(part, [*keys, "group"], ["group_drop_pct"]), trials, keys)
        for group in style.order:
            rows = group_stats[group_stats["group"] == group]
            _line(bottom, rows["relu_pct_mean"], rows, "group_drop_pct", color=style.colour[group],
                  label=style.label[group])
        _line(bottom, stats["relu_pct_mean"], stats, "drop_pct", color="black", linestyle="--", label="overall")
        bottom.axhline(0, color="gray", linewidth=0.6)
        bottom.set_ylabel("relative accuracy drop (%)")
        bottom.set_title(f"Drop against the base model (Figures 6, 7){': ' + name if name else ''}", fontsize=10)
        _relu_axis(bottom, stats["relu_pct_mean"])
        overall.append(stats)
        per_group.append(group_stats)
    axes[1, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return Drawn(fig, {"overall": pd.concat(overall, ignore_index=True),
                       "groups": pd.concat(per_group, ignore_index=True)})


MARKERS = "osD^vP*X"  # one per panel where panels share axes


def distance_and_diagnostics(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Figure 8: ‖θ̃ − θ‖ against the ReLUs kept; each group's accuracy against its gradient norm and
    against its mean margin (closeness to the decision boundary) at the tightest budget, plain KD."""
    plain = _plain(frame)
    if "param_dist" not in plain or plain["param_dist"].isna().all():
        raise LeftOut("the trials have no `param_dist` metric")
    groups = _groups(plain, "group_acc")
    style = GroupStyle(groups)
    diagnostics = [m for m in ("group_grad_norm", "group_margin") if m in groups and groups[m].notna().any()]
    fig = Figure(figsize=(4.4 * (1 + len(diagnostics)) + 1.6, 4.0), layout="constrained")
    axes = fig.subplots(1, 1 + len(diagnostics), squeeze=False)[0]
    distances, tightest = [], []
    for i, (name, part) in enumerate(_panels(groups, panels)):
        keys = [*_panel_keys(part, panels), BUDGET, MU]
        trials = _trials(part)
        stats = _with_relu_pct(_stats(trials, keys, ["param_dist"]), trials, keys)
        _line(axes[0], stats["relu_pct_mean"], stats, "param_dist", marker=MARKERS[i % len(MARKERS)], label=name or None)
        distances.append(stats)
        at = part[part[BUDGET] == stats[BUDGET].iloc[0]]  # the fewest ReLUs kept
        if diagnostics:
            tightest.append(_stats(at, [*keys, "group"], ["group_acc", *diagnostics]).assign(
                relu_pct_mean=stats["relu_pct_mean"].iloc[0], _marker=MARKERS[i % len(MARKERS)], _panel=name))
    axes[0].set_ylabel("‖θ̃ − θ‖")
    axes[0].set_title("Distance to the base model's parameters", fontsize=10)
    _relu_axis(axes[0], pd.concat(distances)["relu_pct_mean"])
    if len(distances) > 1:
        axes[0].legend(fontsize=7)
    tables = {"distance": pd.concat(distances, ignore_index=True)}
    labels = {"group_grad_norm": "gradient norm ‖∇θ J(θ̃; S_g)‖", "group_margin": "mean margin (top-1 − top-2 probability)"}
    if diagnostics:
        points = pd.concat(tightest, ignore_index=True)
        for ax, metric in zip(axes[1:], diagnostics):
            for _, row in points.iterrows():
                ax.errorbar(row[f"{metric}_mean"], row["group_acc_mean"], xerr=row[f"{metric}_std"],
                            yerr=row["group_acc_std"], fmt=row["_marker"], color=style.colour[row["group"]],
                            capsize=2, elinewidth=0.8)
            ax.set_xlabel(labels[metric])
            ax.set_ylabel("group test accuracy")
            ax.set_title(f"At the tightest budget ({points['relu_pct_mean'].min():.3g}% ReLUs)", fontsize=10)
            ax.grid(alpha=0.3)
        handles = [axes[-1].plot([], [], "o", color=style.colour[g], label=style.label[g])[0] for g in style.order]
        if points["_panel"].nunique() > 1:  # which marker is which method
            handles += [axes[-1].plot([], [], marker, color="gray", label=panel)[0]
                        for marker, panel in dict(zip(points["_marker"], points["_panel"])).items()]
        axes[-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
        tables["groups"] = points.drop(columns=["_marker", "_panel"])
    notes = [f"no `{m}/<g>` metric ({MISSING[m]}): its panel is left out"
             for m in ("group_grad_norm", "group_margin") if m not in diagnostics]
    return Drawn(fig, tables, notes=notes)


def bound_against_excess_loss(frame: pd.DataFrame, panels=PANELS) -> Drawn:
    """Theorem 4.4: each group's bound ‖g‖·‖θ̃ − θ‖ + ½·λmax(H)·‖θ̃ − θ‖² (g, H of the base model) against
    its actual excess loss J(θ̃; S_g) − J(θ; S_g), every trial: a point per group, budget and µ; where
    the bound holds a point lies below the diagonal."""
    groups = _groups(frame, "bound", "excess_loss")
    style = GroupStyle(groups)
    keys = [*_panel_keys(groups, panels), BUDGET, MU, *([MITIGATION] if MITIGATION in groups else []), "group"]
    stats = _stats(groups, keys, ["bound", "excess_loss", "bound_holds"])
    budgets = sorted(stats[BUDGET].unique())
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    for _, row in stats.iterrows():
        ax.errorbar(row["bound_mean"], row["excess_loss_mean"], xerr=row["bound_std"], yerr=row["excess_loss_std"],
                    fmt=MARKERS[budgets.index(row[BUDGET]) % len(MARKERS)], color=style.colour[row["group"]],
                    markersize=5, capsize=2, elinewidth=0.7, alpha=0.85)
    # the bound is positive and spans decades; excess losses may be negative: each axis its own scale
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # 2×10³, 3×10³, ... would overlap
    losses = stats["excess_loss_mean"].to_numpy()
    losses = losses[np.isfinite(losses)]
    if len(losses) and (losses > 0).all():
        ax.set_yscale("log")
    else:
        magnitudes = np.abs(losses[losses != 0])
        ax.set_yscale("symlog", linthresh=10.0 ** np.floor(np.log10(magnitudes.min())) if len(magnitudes) else 1e-3)
    low, high = ax.get_xlim()
    bottom, top = ax.get_ylim()
    diagonal = ax.plot([low, high], [low, high], "k:", linewidth=1, label="excess loss = bound")[0]
    ax.set_xlim(low, high)
    ax.set_ylim(bottom, top)
    handles = [ax.plot([], [], "o", color=style.colour[g], label=style.label[g])[0] for g in style.order]
    handles += [ax.plot([], [], MARKERS[i % len(MARKERS)], color="gray", label=f"budget {b:.3g}")[0]
                for i, b in enumerate(budgets)]
    ax.legend(handles=[*handles, diagonal], fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    ax.set_xlabel("bound ‖g‖·‖θ̃ − θ‖ + ½·λmax(H)·‖θ̃ − θ‖²")
    ax.set_ylabel("excess loss J(θ̃; S_g) − J(θ; S_g)")
    holds = groups["bound_holds"].mean()
    above = "\n(the diagonal, excess loss = bound, lies above this view)" if low > top else ""  # or a reader looks for it
    ax.set_title(f"Theorem 4.4: the bound holds for {holds:.0%} of (trial, group){above}", fontsize=10)
    ax.grid(alpha=0.3)
    pairs = groups.dropna(subset=["bound", "excess_loss"])
    positive = pairs[pairs["excess_loss"] > 0]
    note = (f"The excess loss is at most the bound for {holds:.1%} of the {len(pairs)} (trial, group) pairs (the "
            "bound leaves out an O(‖θ̃ − θ‖³) term)")
    if len(positive):
        note += f"; where the loss rose, the bound is {(positive['bound'] / positive['excess_loss']).median():.3g} times it (median)"
    return Drawn(fig, {"groups": stats}, note + ".")
