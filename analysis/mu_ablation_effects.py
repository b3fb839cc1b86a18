"""Whether a finished µ-ablation shows the paper's two effects beyond seed noise.

    fairsweep run sweeps/mu_ablation.yaml
    python analysis/mu_ablation_effects.py sweeps/mu_ablation.yaml [--storage fairsweep-runs] [--set KEY=VALUE]

Prints, per ReLU budget × µ, the mean ± std over seeds (the sample std, as `fairsweep run`'s table) of
`acc`, `worst_group_acc`, `drop_gap_pct`, `minority_drop_pct` and `majority_drop_pct`, then two checks:

- the Matthew effect: at µ = 0 and every budget, the minority's mean relative drop exceeds the
  majority's by more than the larger of their two seed stds, and that difference grows as the
  budget shrinks (budget by budget);
- the mitigation: at the tightest budget, some µ > 0 lowers the mean `drop_gap_pct`, or raises the
  mean `worst_group_acc`, against µ = 0 by more than the larger of the two seed stds; its cost in
  mean `acc` is printed beside it.

Budgets are ordered by the trials' mean `relu_count`, so fractions and counts compare. Exit status 0
when both checks pass, 1 otherwise.
"""

from __future__ import annotations

import pandas as pd

from sweep_results import finished_records, sweep_parser

from fairsweep.sweep.results import records_frame, results_table

BUDGET, MU = "linearize.budget", "finetune.mu"
METRICS = ("acc", "worst_group_acc", "drop_gap_pct", "minority_drop_pct", "majority_drop_pct", "relu_count")


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """`results_table` per (budget, µ), indexed by them, the tightest budget (fewest ReLUs) first."""
    stats = results_table(frame, [BUDGET, MU], METRICS).set_index([BUDGET, MU])
    order = stats["relu_count_mean"].groupby(level=BUDGET).mean().sort_values().index
    return stats.reindex(order, level=BUDGET)


def print_table(stats: pd.DataFrame) -> None:
    shown = METRICS[:-1]
    print(f"{'budget':>8} {'relus':>6} {'µ':>6} {'seeds':>5}  " + "  ".join(f"{m:>17}" for m in shown))
    for (budget, mu), row in stats.iterrows():
        cells = [f"{row[f'{m}_mean']:.{2 if m.endswith('pct') else 4}f} ± "
                 f"{row[f'{m}_std']:.{2 if m.endswith('pct') else 4}f}".rjust(17) for m in shown]
        print(f"{budget:>8g} {row['relu_count_mean']:>6.0f} {mu:>6g} {row['acc_count']:>5.0f}  " + "  ".join(cells))


def matthew_effect(stats: pd.DataFrame) -> tuple[bool, list[str]]:
    """At µ = 0: minority drop − majority drop > max(their stds) at every budget, growing as budgets shrink."""
    plain = stats[stats.index.get_level_values(MU) == 0]
    if plain.empty:
        return False, ["no µ = 0 trials"]
    lines, beyond, gaps = [], True, []
    for (budget, _), row in plain.iterrows():
        gap = row["minority_drop_pct_mean"] - row["majority_drop_pct_mean"]
        noise = max(row["minority_drop_pct_std"], row["majority_drop_pct_std"])
        ok = bool(gap > noise)  # False when a std is NaN (one seed)
        beyond &= ok
        gaps.append(gap)
        lines.append(f"budget {budget:g}: minority {row['minority_drop_pct_mean']:.2f} ± "
                     f"{row['minority_drop_pct_std']:.2f} vs majority {row['majority_drop_pct_mean']:.2f} ± "
                     f"{row['majority_drop_pct_std']:.2f}: difference {gap:.2f} {'>' if ok else '<='} {noise:.2f}")
    grows = all(tight > loose for tight, loose in zip(gaps, gaps[1:]))  # budgets run tightest first
    lines.append("difference, tightest budget first: " + " > ".join(f"{g:.2f}" for g in gaps)
                 + ("" if grows else "  (does not grow as the budget shrinks)"))
    return beyond and grows, lines


def mitigation(stats: pd.DataFrame) -> tuple[bool, list[str]]:
    """At the tightest budget: some µ > 0 beats µ = 0 on drop_gap_pct or worst_group_acc beyond the stds."""
    tightest = stats.index.get_level_values(BUDGET)[0]
    at = stats.xs(tightest, level=BUDGET)
    if 0 not in at.index:
        return False, [f"no µ = 0 trials at budget {tightest:g}"]
    plain, lines, passed = at.loc[0], [], False
    for mu, row in at.drop(index=0).iterrows():
        gap_gain = plain["drop_gap_pct_mean"] - row["drop_gap_pct_mean"]
        gap_noise = max(plain["drop_gap_pct_std"], row["drop_gap_pct_std"])
        worst_gain = row["worst_group_acc_mean"] - plain["worst_group_acc_mean"]
        worst_noise = max(plain["worst_group_acc_std"], row["worst_group_acc_std"])
        ok = bool(gap_gain > gap_noise or worst_gain > worst_noise)
        passed |= ok
        lines.append(f"budget {tightest:g}, µ {mu:g} vs 0: drop_gap_pct lower by {gap_gain:.2f} (std {gap_noise:.2f}), "
                     f"worst_group_acc higher by {worst_gain:.4f} (std {worst_noise:.4f}), "
                     f"acc {row['acc_mean'] - plain['acc_mean']:+.4f}{'  beyond the stds' if ok else ''}")
    return passed, lines


def main() -> None:
    args = sweep_parser(__doc__.split("\n\n")[0]).parse_args()
    spec, _, by_id = finished_records(args)
    stats = summarize(records_frame(by_id.values(), [BUDGET, MU]))
    print(f"{spec.name}: {len(by_id)} finished trials; mean ± std over seeds")
    print_table(stats)
    verdicts = []
    for title, (ok, lines) in (("Matthew effect", matthew_effect(stats)), ("mitigation", mitigation(stats))):
        verdicts.append(ok)
        print(f"{'PASS' if ok else 'FAIL'} {title}")
        for line in lines:
            print(f"  {line}")
    raise SystemExit(0 if all(verdicts) else 1)


if __name__ == "__main__":
    main()
