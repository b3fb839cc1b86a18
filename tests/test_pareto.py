"""The Pareto front and its hypervolume against brute-force oracles; seed averaging; the progress display."""

import io
import itertools
import math

import numpy as np
import pytest
from rich.console import Console

from fairsweep.errors import UserError
from fairsweep.sweep.pareto import (choose_objectives, default_reference, hypervolume, non_dominated, pareto_front,
                                    parse_reference, seed_means, to_minimize)
from fairsweep.sweep.progress import Progress


def brute_force_non_dominated(points) -> list[bool]:
    """Point i is kept unless some j is <= in every objective and < in one (minimization)."""
    keep = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if j != i and all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)):
                dominated = True
        keep.append(not dominated)
    return keep


def cell_hypervolume(points, reference) -> float:
    """Exact hypervolume by brute force: cut space at every coordinate, add each cell some point dominates."""
    axes = [sorted({p[d] for p in points if p[d] < reference[d]} | {reference[d]}) for d in range(len(reference))]
    volume = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        low = [axes[d][k] for d, k in enumerate(cell)]
        high = [axes[d][k + 1] for d, k in enumerate(cell)]
        if any(all(p[d] <= low[d] for d in range(len(low))) for p in points):
            volume += math.prod(h - lo for lo, h in zip(low, high))
    return volume


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("objectives", [2, 3])
def test_non_dominated_matches_brute_force(seed, objectives):
    rng = np.random.default_rng(seed)
    # integers on a small range make ties and duplicate points common
    points = rng.integers(0, 6, size=(40, objectives)).astype(float)
    points[5] = points[7]  # an exact duplicate
    assert non_dominated(points).tolist() == brute_force_non_dominated(points.tolist())


def test_non_dominated_keeps_equal_points_and_drops_weakly_dominated():
    points = np.array([[1, 2], [1, 2], [1, 3], [2, 1], [3, 3]], dtype=float)
    assert non_dominated(points).tolist() == [True, True, False, True, False]


def test_to_minimize_negates_maximized_objectives():
    assert to_minimize(np.array([[0.9, 10.0]]), ["max", "min"]).tolist() == [[-0.9, 10.0]]


def test_hypervolume_by_hand():
    # 2-D: the union of [1,4]x[3,4], [2,4]x[2,4], [3,4]x[1,4] has area 3 + 2 + 1 = 6
    assert hypervolume(np.array([[1, 3], [2, 2], [3, 1]]), np.array([4, 4])) == pytest.approx(6)
    # 3-D: two boxes [0,2]^3 (8) and [1,2]x[1,2]x[-1,2] (3), overlapping in [1,2]^2x[0,2] (2): 9
    assert hypervolume(np.array([[0, 0, 0], [1, 1, -1]]), np.array([2, 2, 2])) == pytest.approx(9)
    # a point not strictly better than the reference in every objective adds nothing
    assert hypervolume(np.array([[1, 5], [5, 1]]), np.array([4, 4])) == 0.0
    assert hypervolume(np.array([[1, 1]]), np.array([4, 4])) == pytest.approx(9)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("objectives", [2, 3])
def test_hypervolume_matches_the_cell_oracle(seed, objectives):
    rng = np.random.default_rng(100 + seed)
    points = rng.random((12, objectives)).round(2)  # rounded: shared coordinates
    reference = np.full(objectives, 0.9)
    assert hypervolume(points, reference) == pytest.approx(cell_hypervolume(points.tolist(), reference.tolist()))
    front = points[non_dominated(points)]
    assert hypervolume(front, reference) == pytest.approx(hypervolume(points, reference))  # dominated add nothing


def test_default_reference_is_beyond_the_worst_point():
    points = np.array([[0.0, 5.0], [1.0, 5.0]])
    assert default_reference(points).tolist() == pytest.approx([1.1, 5.5])  # range 1; no range: |5| · 0.1


def runs_of(rows):
    """MLflow-like trial runs: parameters as text, metrics as numbers."""
    return [{"run_id": f"run{i}", "params": {k: str(v) for k, v in params.items()}, "metrics": metrics}
            for i, (params, metrics) in enumerate(rows)]


def test_seed_means_average_over_seeds_per_configuration():
    runs = runs_of([({"linearize.budget": 0.1, "seed": 0}, {"acc": 0.8, "relu_count": 10.0}),
                    ({"linearize.budget": 0.1, "seed": 1}, {"acc": 0.6, "relu_count": 10.0}),
                    ({"linearize.budget": 0.03, "seed": 0}, {"acc": 0.5, "relu_count": 3.0})])
    table = seed_means(runs, ["linearize.budget"], {"acc": "max", "relu_count": "min"})
    by_budget = {row["linearize.budget"]: row for _, row in table.iterrows()}
    assert by_budget[0.1]["acc"] == pytest.approx(0.7) and by_budget[0.1]["seeds"] == 2
    assert by_budget[0.1]["run_ids"] == ["run0", "run1"] and by_budget[0.03]["acc"] == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_pareto_front_of_random_runs_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for config, s in itertools.product(range(15), range(2)):
        rows.append(({"finetune.mu": config, "seed": s},
                     {"acc": float(rng.integers(0, 5)), "drop_gap_pct": float(rng.integers(0, 5)),
                      "relu_count": float(rng.integers(0, 3))}))
    objectives = {"acc": "max", "drop_gap_pct": "min", "relu_count": "min"}
    front = pareto_front(runs_of(rows), ["finetune.mu"], objectives)
    assert front.table["finetune.mu"].tolist() == list(range(15))  # numbers again, in numeric order
    means = [[np.mean([m[k] for p, m in rows if p["finetune.mu"] == c]) for k in objectives] for c in range(15)]
    minimized = [[-a, d, r] for a, d, r in means]
    assert front.on_front.tolist() == brute_force_non_dominated(minimized)
    assert front.hypervolume == pytest.approx(cell_hypervolume(minimized, to_minimize(front.reference,
                                                                                      list(objectives.values()))))


def test_tied_configurations_share_one_point_of_the_front_and_of_the_plot(tmp_path):
    from fairsweep.sweep.pareto import plot_front

    rows = [({"finetune.mu": 0}, {"acc": 0.9, "relu_count": 4.0}), ({"finetune.mu": 1}, {"acc": 0.8, "relu_count": 2.0}),
            ({"finetune.mu": 2}, {"acc": 0.9, "relu_count": 4.0}), ({"finetune.mu": 3}, {"acc": 0.7, "relu_count": 5.0})]
    front = pareto_front(runs_of(rows), ["finetune.mu"], {"acc": "max", "relu_count": "min"})
    numbered = front.numbered()
    assert numbered[["point", "finetune.mu"]].values.tolist() == [[1, 0], [2, 1], [1, 2]]  # µ 0 and 2 tie
    assert plot_front(front, "acc", "relu_count", None, tmp_path / "front.png", "t").stat().st_size > 0


def test_pareto_front_with_a_given_reference_and_a_missing_metric():
    rows = [({"finetune.mu": 0}, {"acc": 0.9, "relu_count": 4.0}), ({"finetune.mu": 1}, {"acc": 0.8, "relu_count": 2.0}),
            ({"finetune.mu": 2}, {"acc": math.nan, "relu_count": 1.0})]
    front = pareto_front(runs_of(rows), ["finetune.mu"], {"acc": "max", "relu_count": "min"}, reference=[0.5, 5.0])
    assert front.on_front.tolist() == [True, True, False]  # no accuracy: not comparable, not on the front
    # minimized: (-0.9, 4), (-0.8, 2) against (-0.5, 5): 0.4·1 + 0.3·2 = 1.0
    assert front.hypervolume == pytest.approx(1.0) and front.reference.tolist() == [0.5, 5.0]


def test_objective_options_are_checked():
    with pytest.raises(UserError) as info:
        choose_objectives(None, ["accc:max", "relu_count:minimize"])
    text = "\n".join(info.value.problems)
    assert "unknown objective metric `accc` (did you mean `acc`?)" in text
    assert "`--objective relu_count:minimize`: expected METRIC:max or METRIC:min" in text
    with pytest.raises(UserError, match="at least two objectives"):
        choose_objectives(None, ["acc:max"])
    with pytest.raises(UserError, match="expected 2 comma-separated numbers"):
        parse_reference("0.5", {"acc": "max", "relu_count": "min"})


def test_live_progress_shows_counts_stages_and_best():
    out = io.StringIO()
    progress = Progress(4, already_done=1, console=Console(file=out, force_terminal=True, width=120),
                        objectives={"acc": "max", "drop_gap_pct": "min"})
    progress.trial_started()
    progress.trial_started()
    progress.trial_done("a", {"acc": 0.8, "drop_gap_pct": 5.0}, {"base": False, "linearize": True, "finetune": True})
    progress.trial_done("b", {"acc": 0.7, "drop_gap_pct": 3.0}, {"base": False, "linearize": False, "finetune": True})
    counts, best = progress.status_lines()
    assert counts.startswith("done 3  running 0  pending 1  failed 0    stages trained 3  reused 3    eta ")
    assert counts.endswith("s") and best == "best: acc 0.8  drop_gap_pct 3"
    progress.close()
    assert "stages trained 3  reused 3" in out.getvalue()


def test_plain_progress_lines_name_the_followed_metrics():
    out = io.StringIO()
    progress = Progress(2, console=Console(file=out, force_terminal=False, width=200))
    progress.trial_done("seed=0", {"acc": 0.5, "worst_group_acc": 0.25}, {"base": True})
    assert out.getvalue().startswith("[1/2] seed=0  acc=0.5000  worst_group_acc=0.2500  (elapsed ")
