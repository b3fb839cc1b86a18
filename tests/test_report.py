"""`fairsweep report`'s figures and tables on constructed trial runs whose numbers are known: the per-group
reader and what it derives, each figure's numbers against means and stds taken here by hand, the figures
left out and why, the search's importance against Optuna's own and its hypervolume history, the page."""

import html.parser
import itertools
import math
import statistics

import numpy as np
import pytest

from fairsweep.report.figures import (BUDGET, METHOD, MITIGATION, MU, LeftOut, bound_against_excess_loss,
                                      distance_and_diagnostics, drop_by_budget, gradient_norm_bars,
                                      group_accuracy_bars)
from fairsweep.report.mitigation import mitigation_bars, mu_ablation, mu_effects
from fairsweep.report.page import mean_std, render
from fairsweep.report.search import front_figure, hypervolume_history, importances
from fairsweep.sweep.results import group_frame, runs_frame

GROUPS = {"white": (100, 50), "asian": (10, 10)}  # train, test samples: white the majority, asian the minority
SEEDS, BUDGETS, MUS = (0, 1, 2), (0.1, 0.5), (0.0, 0.01)
KEYS = [BUDGET, MU, METHOD, MITIGATION]


def base_accuracy(seed: int, group: str) -> float:
    return {"white": 0.9 + 0.02 * seed, "asian": 0.6 + 0.1 * seed}[group]


def synthetic_runs(mus=MUS, diagnostics=True):
    """MLflow-like trial runs of a grid over seeds × budgets × µ, and the truth: one dict per (trial, group)."""
    rng = np.random.default_rng(0)
    runs, truth = [], []
    for i, (seed, budget, mu) in enumerate(itertools.product(SEEDS, BUDGETS, mus)):
        metrics, rows = {"relu_fraction": budget, "relu_count": budget * 1000,
                         "param_dist": 10 * (1 - budget) + rng.random()}, []
        for group, (train, test) in GROUPS.items():
            drop = rng.uniform(0, 40 if group == "asian" else 5)
            row = {"seed": seed, BUDGET: budget, MU: mu, "group": group, "base": base_accuracy(seed, group),
                   "acc": base_accuracy(seed, group) * (1 - drop / 100), "drop": drop, "test": test,
                   "grad": rng.uniform(1, 10), "base_grad": 3.0 + seed, "margin": rng.uniform(0.3, 0.9),
                   "hessian": rng.uniform(10, 100), "base_hessian": 50.0 + seed,
                   "bound": rng.uniform(0.5, 2), "excess": rng.uniform(0, 2), "mitigation": rng.uniform(-5, 5)}
            rows.append(row)
            metrics.update({f"group_acc/{group}": row["acc"], f"group_drop_pct/{group}": drop,
                            f"group_size/train/{group}": train, f"group_size/test/{group}": test,
                            f"bound/{group}": row["bound"], f"excess_loss/{group}": row["excess"],
                            f"finetune/multiplier/{group}": 0.5})  # a curve's last value, not a group metric
            if diagnostics:
                metrics.update({f"group_grad_norm/{group}": row["grad"], f"base_group_grad_norm/{group}": row["base_grad"],
                                f"group_margin/{group}": row["margin"], f"group_hessian_eig/{group}": row["hessian"],
                                f"base_group_hessian_eig/{group}": row["base_hessian"]})
            if mu > 0:
                metrics[f"mitigation_drop_pct/{group}"] = row["mitigation"]
        metrics["acc"] = sum(r["acc"] * r["test"] for r in rows) / sum(r["test"] for r in rows)
        metrics["worst_group_acc"] = min(r["acc"] for r in rows)
        metrics["drop_gap_pct"] = max(r["drop"] for r in rows) - min(r["drop"] for r in rows)
        for row in rows:
            row["trial_acc"] = metrics["acc"]
        params = {"seed": seed, BUDGET: budget, MU: mu, METHOD: "snl", MITIGATION: "algorithm1"}
        runs.append({"run_id": f"run{i}", "params": {k: str(v) for k, v in params.items()}, "metrics": metrics,
                     "end_time": 1000 * i})
        truth.extend(rows)
    return runs, truth


def frame_of(runs):
    return runs_frame(runs, KEYS)


def by_hand(truth, value, **where):
    """(mean, std, count) over the truth rows matching `where` of `value(row)`."""
    values = [value(r) for r in truth if all(r[k] == v for k, v in where.items())]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values)


def row_of(table, **where):
    match = table
    for key, value in where.items():
        match = match[match[key] == value]
    assert len(match) == 1, where
    return match.iloc[0]


def assert_stats(row, metric, expected):
    mean, std, count = expected
    assert row[f"{metric}_mean"] == pytest.approx(mean) and row[f"{metric}_count"] == count
    assert (math.isnan(std) and math.isnan(row[f"{metric}_std"])) or row[f"{metric}_std"] == pytest.approx(std)


# --- the reader ------------------------------------------------------------------------------


def test_group_frame_has_a_row_per_trial_and_group_and_derives_the_base_model():
    runs, truth = synthetic_runs()
    groups = group_frame(frame_of(runs))
    assert len(groups) == len(runs) * len(GROUPS)
    assert list(dict.fromkeys(groups["group"])) == ["white", "asian"]  # most training samples first, not a–z
    assert not any("/" in c for c in groups.columns)  # curves' last values are no group metric
    for _, row in groups.iterrows():
        seed, group = row["seed"], row["group"]
        assert row["base_group_acc"] == pytest.approx(base_accuracy(seed, group))
        n = {g: test for g, (_, test) in GROUPS.items()}
        base = sum(base_accuracy(seed, g) * n[g] for g in GROUPS) / sum(n.values())
        assert row["base_acc"] == pytest.approx(base)
        assert row["drop_pct"] == pytest.approx((base - row["acc"]) / base * 100)
        assert row["bound_holds"] == float(row["excess_loss"] <= row["bound"])
        assert row["test_size"] == GROUPS[group][1]
    # the trials with µ > 0 have the groups' mitigation drops; the trial's own overall one is not kept
    assert groups.loc[groups[MU] > 0, "mitigation_drop_pct"].notna().all()
    assert groups.loc[groups[MU] == 0, "mitigation_drop_pct"].isna().all()


def test_a_base_model_that_got_a_group_wrong_has_accuracy_0_there():
    runs, _ = synthetic_runs()
    runs[0]["metrics"].update({"group_acc/asian": 0.2, "group_drop_pct/asian": math.nan})  # base got none right
    runs[1]["metrics"].update({"group_acc/asian": 0.0, "group_drop_pct/asian": 100.0})  # unknown: 0 / 0
    groups = group_frame(frame_of(runs)).set_index(["run_id", "group"])
    assert groups.loc[("run0", "asian"), "base_group_acc"] == 0.0
    assert math.isnan(groups.loc[("run1", "asian"), "base_group_acc"]) and math.isnan(groups.loc[("run1", "white"), "base_acc"])


# --- the figures -----------------------------------------------------------------------------


def test_figure_1_shows_the_plain_kd_seed_means_and_the_base_model_with_the_groups_sizes():
    runs, truth = synthetic_runs()
    drawn = group_accuracy_bars(frame_of(runs))
    table = drawn.tables["groups"]
    assert len(table) == (1 + len(BUDGETS)) * len(GROUPS) and set(table[MU]) == {0.0}
    for budget, group in itertools.product(BUDGETS, GROUPS):
        row = row_of(table, **{BUDGET: budget, "group": group})
        assert_stats(row, "group_acc", by_hand(truth, lambda r: r["acc"], **{BUDGET: budget, MU: 0.0, "group": group}))
    for group in GROUPS:  # the base model's bars: one value per seed
        base = [base_accuracy(s, group) for s in SEEDS]
        assert_stats(row_of(table, **{BUDGET: "base", "group": group}), "group_acc",
                     (statistics.mean(base), statistics.stdev(base), len(SEEDS)))
    ax = drawn.figure.axes[0]
    assert len(ax.patches) == (1 + len(BUDGETS)) * len(GROUPS)
    assert sorted(t.get_text() for t in ax.texts) == sorted(["50", "10"] * (1 + len(BUDGETS)))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["white, n=50", "asian (minority), n=10"]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["base model", "50% ReLUs", "10% ReLUs"]


def test_figures_5_to_7_drop_overall_and_per_group_against_the_base_model():
    runs, truth = synthetic_runs()
    drawn = drop_by_budget(frame_of(runs))
    overall, groups = drawn.tables["overall"], drawn.tables["groups"]
    assert list(overall[BUDGET]) == [0.1, 0.5]  # fewest ReLUs first: the x axis
    n = {g: test for g, (_, test) in GROUPS.items()}
    for budget in BUDGETS:
        def drop(row):
            base = sum(base_accuracy(row["seed"], g) * n[g] for g in GROUPS) / sum(n.values())
            return (base - row["trial_acc"]) / base * 100
        assert_stats(row_of(overall, **{BUDGET: budget}), "drop_pct",
                     by_hand(truth, drop, **{BUDGET: budget, MU: 0.0, "group": "white"}))
        for group in GROUPS:
            assert_stats(row_of(groups, **{BUDGET: budget, "group": group}), "group_drop_pct",
                         by_hand(truth, lambda r: r["drop"], **{BUDGET: budget, MU: 0.0, "group": group}))
    assert row_of(overall, **{BUDGET: 0.5})["relu_pct_mean"] == pytest.approx(50)
    bottom = drawn.figure.axes[1]
    assert len(bottom.containers) == len(GROUPS) + 1  # a line per group and the overall drop


def test_figure_8_at_the_tightest_budget_and_without_a_diagnostic_says_what_it_left_out():
    runs, truth = synthetic_runs()
    drawn = distance_and_diagnostics(frame_of(runs))
    assert len(drawn.figure.axes) == 3 and drawn.notes == []
    points = drawn.tables["groups"]
    assert set(points[BUDGET]) == {0.1}
    for group in GROUPS:
        assert_stats(row_of(points, group=group), "group_grad_norm",
                     by_hand(truth, lambda r: r["grad"], **{BUDGET: 0.1, MU: 0.0, "group": group}))
    frame = frame_of(runs)
    without = distance_and_diagnostics(frame.drop(columns=[c for c in frame if c.startswith("group_margin/")]))
    assert len(without.figure.axes) == 2  # the distance and the gradient norms
    assert without.notes == ["no `group_margin/<g>` metric (diagnostics.margins is off): its panel is left out"]


def test_figures_whose_metrics_the_trials_lack_are_left_out_saying_why():
    runs, _ = synthetic_runs(mus=(0.0,), diagnostics=False)
    frame = frame_of(runs)
    cases = [(gradient_norm_bars, "no `group_grad_norm/<g>` metric (diagnostics.grad_norms is off)"),
             (mitigation_bars, "no mitigated trial (µ > 0, or finetune.mitigation: released_code) has finished"),
             (mu_ablation, "the sweep has one µ (0) under Algorithm 1: an ablation needs two or more"),
             (mu_effects, "an ablation needs two or more")]
    for draw, why in cases:
        with pytest.raises(LeftOut) as raised:
            draw(frame)
        assert why in str(raised.value), draw.__name__
    searched = synthetic_runs()[0]  # a search's points: every µ at a budget of its own
    for run in searched:
        if run["params"][MU] != "0.0":
            run["params"][BUDGET] = str(float(run["params"][BUDGET]) + 0.05)
    for draw in (mu_ablation, mu_effects):
        with pytest.raises(LeftOut, match="no budget was run at two µ or more under Algorithm 1"):
            draw(frame_of(searched))
    mitigated_only = frame_of(synthetic_runs(mus=(0.01,))[0])
    with pytest.raises(LeftOut, match=r"no finished trial was finetuned by plain KD \(µ = 0 under Algorithm 1\)"):
        group_accuracy_bars(mitigated_only)


def test_figure_9_shows_each_mitigated_trials_drop_against_its_twin():
    runs, truth = synthetic_runs(mus=(0.0, 0.01, 0.03))
    table = mitigation_bars(frame_of(runs)).tables["groups"]
    assert set(table[MU]) == {0.01, 0.03} and len(table) == 2 * len(BUDGETS) * len(GROUPS)
    for mu, budget, group in itertools.product((0.01, 0.03), BUDGETS, GROUPS):
        assert_stats(row_of(table, **{MU: mu, BUDGET: budget, "group": group}), "mitigation_drop_pct",
                     by_hand(truth, lambda r: r["mitigation"], **{MU: mu, BUDGET: budget, "group": group}))


def test_figure_15_has_a_panel_per_mu_and_the_effects_a_line_per_budget():
    runs, truth = synthetic_runs(mus=(0.0, 0.01, 0.03))
    drawn = mu_ablation(frame_of(runs))
    assert len(drawn.figure.axes) == 3  # µ = 0, 0.01, 0.03; the legend is outside
    assert [ax.get_title() for ax in drawn.figure.axes] == ["snl, µ = 0 (plain KD)", "snl, µ = 0.01", "snl, µ = 0.03"]
    assert_stats(row_of(drawn.tables["groups"], **{MU: 0.03, BUDGET: 0.1, "group": "asian"}), "group_drop_pct",
                 by_hand(truth, lambda r: r["drop"], **{MU: 0.03, BUDGET: 0.1, "group": "asian"}))
    effects = mu_effects(frame_of(runs))
    assert len(effects.tables["trials"]) == 3 * len(BUDGETS)
    assert all(len(ax.containers) == len(BUDGETS) for ax in effects.figure.axes)


def test_theorem_4_4s_share_of_holds_and_its_points():
    runs, truth = synthetic_runs()
    drawn = bound_against_excess_loss(frame_of(runs))
    holds = statistics.mean(float(r["excess"] <= r["bound"]) for r in truth)
    assert f"at most the bound for {holds:.1%} of the {len(truth)} (trial, group) pairs" in drawn.note
    table = drawn.tables["groups"]
    assert len(table) == len(BUDGETS) * len(MUS) * len(GROUPS)
    assert_stats(row_of(table, **{BUDGET: 0.5, MU: 0.01, "group": "white"}), "bound_holds",
                 by_hand(truth, lambda r: float(r["excess"] <= r["bound"]), **{BUDGET: 0.5, MU: 0.01, "group": "white"}))


# --- the front and the search ----------------------------------------------------------------


def search_runs(n_configs=12, seeds=2):
    """Runs of a search over `a` (float) and `b` (categorical): objective `x` depends on `a` only, `y` on `b`."""
    rng = np.random.default_rng(1)
    runs = []
    for config, seed in itertools.product(range(n_configs), range(seeds)):
        a, b = (config * 7 % n_configs) / n_configs, ["p", "q", "r"][config % 3]
        metrics = {"x": a + 0.01 * rng.random(), "y": {"p": 1.0, "q": 2.0, "r": 3.0}[b] + 0.01 * rng.random()}
        runs.append({"run_id": f"r{config}-{seed}", "params": {"s.a": str(a), "s.b": b, "seed": str(seed)},
                     "metrics": metrics, "end_time": 1000 * (n_configs - config) + seed})
    return runs_frame(runs, ["s.a", "s.b"])


def test_the_front_carries_each_configurations_seed_std_as_error_bars():
    frame = search_runs()
    drawn = front_figure(frame, ["s.a", "s.b"], {"x": "max", "y": "min"})
    table = drawn.tables["configurations"]
    for _, row in table.iterrows():
        values = frame[(frame["s.a"] == row["s.a"]) & (frame["s.b"] == row["s.b"])]["x"]
        assert row["x_mean"] == pytest.approx(values.mean()) and row["x_std"] == pytest.approx(statistics.stdev(values))
    assert table["non_dominated"].iloc[0] and not table["non_dominated"].iloc[-1]  # the front first
    bars = drawn.figure.axes[0].containers[1]  # the non-dominated ones' error bars
    widths = sorted(np.ptp(segment[:, 0]) for segment in bars.lines[2][0].get_segments())
    on_front = table[table["non_dominated"]]
    assert widths == pytest.approx(sorted(2 * on_front["x_std"]))


def test_importance_is_optunas_fanova_of_the_seed_means_and_finds_what_matters():
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    frame = search_runs()
    space = {"s.a": FloatDistribution(0.0, 1.0), "s.b": CategoricalDistribution(["p", "q", "r"])}
    table = importances(frame, {"x": "max", "y": "min"}, space).tables["importance"].set_index("key")
    # the oracle: the study the search would have told the seed means, built here by hand
    study = optuna.create_study(directions=["maximize", "minimize"])
    for (a, b), part in frame.groupby(["s.a", "s.b"]):
        study.add_trial(optuna.trial.create_trial(params={"s.a": a, "s.b": b}, distributions=space,
                                                  values=[part["x"].mean(), part["y"].mean()]))
    for i, metric in enumerate(("x", "y")):
        expected = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                                           target=lambda t, i=i: t.values[i])
        assert table[metric].to_dict() == pytest.approx(expected)
    assert table.loc["s.a", "x"] > 0.8 and table.loc["s.b", "y"] > 0.8
    with pytest.raises(LeftOut, match="two or more configurations"):
        importances(search_runs(n_configs=1), {"x": "max", "y": "min"}, space)


def test_the_hypervolume_history_follows_the_finish_order_and_ends_at_the_fronts():
    from fairsweep.sweep.pareto import front_of

    frame = search_runs()
    objectives = {"x": "max", "y": "min"}
    history = hypervolume_history(frame, ["s.a", "s.b"], objectives).tables["history"]
    assert history["configurations"].tolist() == list(range(1, 13))
    assert history["s.a"].iloc[0] == frame.loc[frame["end_time"].idxmin(), "s.a"]  # config 11 finished first
    assert (np.diff(history["hypervolume"]) >= -1e-12).all()  # a front only grows
    assert history["hypervolume"].iloc[-1] == pytest.approx(front_of(frame, ["s.a", "s.b"], objectives).hypervolume)


# --- the page --------------------------------------------------------------------------------


class Cells(html.parser.HTMLParser):
    """The rows of each table of a page (by its last class), the sources of its images and its links."""

    def __init__(self):
        super().__init__()
        self.tables, self.sources, self.links, self._cell = {}, [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._rows = self.tables.setdefault(attrs.get("class", "").split()[-1], [])
        elif tag == "tr":
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.sources.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._rows[-1].append(self._cell.strip())
            self._cell = None


def test_the_page_is_self_contained_and_shows_each_tables_means_and_stds(tiny_raw):
    from fairsweep.report import sections
    from fairsweep.spec import validate_spec

    tiny_raw["sweep"] = {"grid": {"seed": list(SEEDS), BUDGET: list(BUDGETS), MU: list(MUS)}}
    runs, _ = synthetic_runs()
    drawn = sections(frame_of(runs), validate_spec(tiny_raw))
    left = {s.name: s.left_out for s in drawn if s.left_out}
    assert left == {"importance": "a grid sweep, not an Optuna search",
                    "hypervolume_history": "a grid sweep, not an Optuna search"}
    page = Cells()
    page.feed(render("t", [("sweep", "t")], drawn, None))
    assert len(page.sources) == len(drawn) - len(left) and all(s.startswith("data:image/png;base64,") for s in page.sources)
    assert all(link.startswith("#") for link in page.links)
    figure1 = next(s for s in drawn if s.name == "fig1_group_accuracy").tables["groups"]
    rows = page.tables["fig1_group_accuracy-groups"]
    header = rows[0]
    for (_, expected), shown in zip(figure1.iterrows(), rows[1:]):
        cell = dict(zip(header, shown))
        assert cell["group_acc"] == f"{expected['group_acc_mean']:.4f} ± {expected['group_acc_std']:.4f}"
        assert cell["test_size"] == f"{expected['test_size_mean']:.0f}" and cell["seeds"] == "3"
        assert cell["group"] == expected["group"] and cell[BUDGET] == (
            "base" if expected[BUDGET] == "base" else f"{expected[BUDGET]:g}")


def test_a_number_is_shown_with_its_std_and_never_as_minus_zero():
    assert mean_std(0.81234, 0.0061, ".4f") == "0.8123 ± 0.0061"
    assert mean_std(-0.0001, math.nan, ".2f") == "0.00" and mean_std(-0.0, 0.5, ".1f") == "0.0 ± 0.5"
    assert mean_std(-0.01, math.nan, ".2f") == "-0.01"
    assert mean_std(math.nan, 1.0, ".2f") == "—"


def test_a_search_gets_the_importance_of_its_keys_and_its_hypervolume_history(tiny_raw):
    from fairsweep.report import sections
    from fairsweep.spec import validate_spec

    tiny_raw["sweep"] = {"search": {"space": {BUDGET: {"type": "float", "low": 0.05, "high": 0.6},
                                              MU: {"type": "float", "low": 0.0, "high": 0.05}},
                                    "objectives": {"acc": "max", "drop_gap_pct": "min"}, "n_trials": 4}}
    drawn = {s.name: s for s in sections(frame_of(synthetic_runs()[0]), validate_spec(tiny_raw))}
    assert drawn["importance"].left_out is None and drawn["hypervolume_history"].left_out is None
    importance = drawn["importance"].tables["importance"]
    assert importance["key"].tolist() == [BUDGET, MU]
    assert importance[["acc", "drop_gap_pct"]].sum().tolist() == pytest.approx([1.0, 1.0])
    history = drawn["hypervolume_history"].tables["history"]
    assert len(history) == len(BUDGETS) * len(MUS)
    # the history ends where the front's hypervolume (the caption's, as `fairsweep pareto` gives it) is
    assert f"Hypervolume {history['hypervolume'].iloc[-1]:.6g} against" in drawn["pareto_front"].caption
