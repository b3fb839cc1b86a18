"""analysis/mu_ablation_effects.py's two checks on hand-made seed tables: they pass where the effect
exceeds the larger seed std, and fail where it does not (or does not grow as the budget shrinks)."""

import sys

import pandas as pd
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "analysis"))
from mu_ablation_effects import BUDGET, MU, matthew_effect, mitigation, summarize  # noqa: E402


def frame(cells: dict[tuple[float, float], dict[str, list[float]]]) -> pd.DataFrame:
    """One row per seed from {(budget, µ): {metric: per-seed values}}; relu_count orders the budgets."""
    rows = []
    for (budget, mu), metrics in cells.items():
        for seed in range(3):
            rows.append({BUDGET: budget, MU: mu, "seed": seed, "relu_count": int(budget * 1000),
                         "acc": 0.8, **{m: v[seed] for m, v in metrics.items()}})
    return pd.DataFrame(rows)


def drops(minority: list[float], majority: list[float]) -> dict[str, list[float]]:
    return {"minority_drop_pct": minority, "majority_drop_pct": majority,
            "drop_gap_pct": [a - b for a, b in zip(minority, majority)], "worst_group_acc": [0.5, 0.5, 0.5]}


def test_matthew_effect_needs_the_difference_beyond_the_spread_and_growing():
    growing = frame({(0.2, 0.0): drops([30, 32, 34], [10, 10, 10]), (0.6, 0.0): drops([14, 15, 16], [5, 5, 5])})
    ok, lines = matthew_effect(summarize(growing))
    assert ok and lines[0].startswith("budget 0.2:") and "difference 22.00 > 2.00" in lines[0]
    noisy = frame({(0.2, 0.0): drops([10, 30, 50], [10, 10, 10]), (0.6, 0.0): drops([14, 15, 16], [5, 5, 5])})
    assert not matthew_effect(summarize(noisy))[0]  # difference 20 <= std 20 (the minority's)
    shrinking = frame({(0.2, 0.0): drops([14, 15, 16], [5, 5, 5]), (0.6, 0.0): drops([30, 32, 34], [10, 10, 10])})
    ok, lines = matthew_effect(summarize(shrinking))
    assert not ok and "does not grow" in lines[-1]


@pytest.mark.parametrize("mitigated_gap, passes", [([4, 5, 6], True), ([5, 15, 25], False)])
def test_mitigation_is_judged_at_the_tightest_budget_against_the_larger_std(mitigated_gap, passes):
    plain = drops([30, 32, 34], [10, 10, 10])
    mitigated = {**plain, "drop_gap_pct": mitigated_gap}
    cells = {(0.2, 0.0): plain, (0.2, 0.03): mitigated,
             (0.6, 0.0): drops([14, 15, 16], [5, 5, 5]), (0.6, 0.03): drops([14, 15, 16], [5, 5, 5])}
    ok, lines = mitigation(summarize(frame(cells)))
    assert ok is passes and len(lines) == 1 and lines[0].startswith("budget 0.2, µ 0.03 vs 0")
