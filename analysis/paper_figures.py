"""The paper's per-group figures from a finished sweep (grid over budgets, and µ for Figure 9):

- fig3_grad_norms.png — gradient norm of each group's loss per ReLU budget (the paper's Figure 3);
- fig4_hessian.png — top Hessian eigenvalue of each group's loss, base and linearized models (Figure 4);
- fig6_drop.png — relative test-accuracy drop of each group per budget, against the base model (Figure 6);
- fig9_mitigation.png — relative drop of the mitigated (µ > 0) against the plain-KD model (Figure 9);
- bound.png — Theorem 4.4's bound against the actual excess loss, per group and trial, and how often it holds.

Each is the mean over seeds (error bars: std). Figures whose metrics the sweep lacks are left out.

    fairsweep run sweeps/mu_ablation.yaml
    python analysis/paper_figures.py sweeps/mu_ablation.yaml [--storage fairsweep-runs] [--out figures/]

Reads the trial records from the sweep's storage; writes the figures and `per_group.csv` (one row
per trial and group) to --out and logs them to the sweep's MLflow run when it finds one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sweep_results import finished_records, log_to_sweep_run, sweep_parser  # noqa: E402

from fairsweep.metrics.values import safe_key  # noqa: E402

PER_GROUP = ("group_acc", "group_drop_pct", "group_grad_norm", "group_margin", "group_hessian_eig",
             "base_group_hessian_eig", "bound", "excess_loss", "mitigation_drop_pct")


def per_group_frame(records: list) -> pd.DataFrame:
    """One row per (trial, group) of the trial records: seed, budget, µ, method and every per-group metric present."""
    rows = []
    for record in records:
        spec, metrics = record.spec, record.metrics
        for group in record.accuracy["final"].by_group:
            row = {"seed": spec["seed"], "budget": spec["linearize"]["budget"], "mu": spec["finetune"]["mu"],
                   "method": spec["linearize"]["method"], "group": group}
            row.update({m: metrics[f"{m}/{safe_key(group)}"] for m in PER_GROUP if f"{m}/{safe_key(group)}" in metrics})
            rows.append(row)
    return pd.DataFrame(rows)


def bars_by_budget(frame: pd.DataFrame, metric: str, ylabel: str, title: str, path: Path) -> bool:
    """Grouped bars: x = group, one bar per budget, mean ± std over seeds. False if `metric` is absent."""
    if metric not in frame or frame[metric].isna().all():
        return False
    stats = frame.groupby(["group", "budget"], sort=False)[metric].agg(["mean", "std"]).reset_index()
    groups = list(dict.fromkeys(stats["group"]))
    budgets = sorted(stats["budget"].unique(), key=lambda b: (isinstance(b, float), b if isinstance(b, float) else 0))
    width = 0.8 / len(budgets)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(groups) * max(1, len(budgets) / 2)), 4))
    for i, budget in enumerate(budgets):
        part = stats[stats["budget"] == budget].set_index("group").reindex(groups)
        ax.bar([g + i * width for g in range(len(groups))], part["mean"], width, yerr=part["std"].fillna(0),
               label=f"budget {budget:g}" if isinstance(budget, float) else str(budget), capsize=2)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
    ax.set_xlabel("group")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def bound_scatter(frame: pd.DataFrame, path: Path) -> float | None:
    """Theorem 4.4: bound against excess loss (log-log where positive); returns the share of holds."""
    if "bound" not in frame or frame["bound"].isna().all():
        return None
    data = frame.dropna(subset=["bound", "excess_loss"])
    holds = float((data["excess_loss"] <= data["bound"]).mean())
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(data["bound"], data["excess_loss"], s=12, c=pd.factorize(data["group"])[0], cmap="tab10")
    top = max(data["bound"].max(), data["excess_loss"].max())
    ax.plot([0, top], [0, top], "k:", linewidth=1, label="excess loss = bound")
    ax.set_xscale("symlog", linthresh=1e-3)  # bounds span decades; excess losses may be negative
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("bound ‖g‖·d + ½·λmax(H)·d²  (base model's g, H)")
    ax.set_ylabel("excess loss J(θ̃) − J(θ)")
    ax.set_title(f"Theorem 4.4 holds for {holds:.0%} of (trial, group)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return holds


def main() -> None:
    parser = sweep_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures")
    args = parser.parse_args()

    spec, _, records = finished_records(args)
    records = list(records.values())
    frame = per_group_frame(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "per_group.csv", index=False)
    plain = frame[frame["mu"] == 0] if (frame["mu"] == 0).any() else frame
    hessians = plain
    if "base_group_hessian_eig" in plain:  # the base model's, once per seed, beside the linearized ones'
        base = plain.drop_duplicates(["seed", "group"]).assign(
            budget="base", group_hessian_eig=lambda f: f["base_group_hessian_eig"])
        hessians = pd.concat([base, plain], ignore_index=True)
    written = [out / "per_group.csv"]
    for data, metric, ylabel, title, name in (
            (plain, "group_grad_norm", "‖∇θ J(θ̃; S_g)‖", "Gradient norms (Figure 3), plain KD", "fig3_grad_norms.png"),
            (hessians, "group_hessian_eig", "λmax(H_g)", "Top Hessian eigenvalues (Figure 4), plain KD",
             "fig4_hessian.png"),
            (plain, "group_drop_pct", "relative accuracy drop (%)", "Drop against the base model (Figure 6)",
             "fig6_drop.png")):
        if bars_by_budget(data, metric, ylabel, title, out / name):
            written.append(out / name)
    mitigated = frame[frame["mu"] == frame["mu"].max()]
    if (frame["mu"] > 0).any() and bars_by_budget(mitigated, "mitigation_drop_pct", "relative drop vs plain KD (%)",
                                                  f"Mitigation, µ = {frame['mu'].max():g} (Figure 9)",
                                                  out / "fig9_mitigation.png"):
        written.append(out / "fig9_mitigation.png")
    holds = bound_scatter(frame, out / "bound.png")
    if holds is not None:
        written.append(out / "bound.png")
        print(f"Theorem 4.4's bound holds for {holds:.1%} of (trial, group) pairs")
    print(f"{len(records)} trials; wrote " + ", ".join(p.name for p in written) + f" to {out}")

    log_to_sweep_run(spec, written)

if __name__ == "__main__":
    main()
