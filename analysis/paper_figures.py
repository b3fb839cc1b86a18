"""The paper's per-group figures from a finished sweep's trial records (grid over budgets, and µ for Figure 9):

- fig3_grad_norms.png — gradient norm of each group's loss per ReLU budget (the paper's Figure 3);
- fig4_hessian.png — top Hessian eigenvalue of each group's loss, base and linearized models (Figure 4);
- fig6_drop.png — global accuracy, and the relative test-accuracy drop of each group and overall per
  budget, against the base model (Figures 5–7);
- fig9_mitigation.png — relative drop of the mitigated (µ > 0) against the plain-KD model (Figure 9);
- bound.png — Theorem 4.4's bound against the actual excess loss, per group, and how often it holds.

Each is the mean over seeds (error bars: std). Figures whose metrics the sweep lacks are left out.
`fairsweep report` draws these and the rest of the paper's figures from MLflow, with the same functions
(`fairsweep.report`); this script draws them from the storage's trial records instead.

    fairsweep run sweeps/mu_ablation.yaml
    python analysis/paper_figures.py sweeps/mu_ablation.yaml [--storage fairsweep-runs] [--out figures/]

Writes the figures and `per_group.csv` (one row per trial and group) to --out and logs them to the
sweep's MLflow run when it finds one.
"""

from __future__ import annotations

from pathlib import Path

from sweep_results import finished_records, log_to_sweep_run, sweep_parser

from fairsweep.report.figures import (BUDGET, METHOD, MITIGATION, MU, LeftOut, bound_against_excess_loss,
                                      drop_by_budget, gradient_norm_bars, hessian_bars)
from fairsweep.report.mitigation import mitigation_bars
from fairsweep.sweep.results import group_frame, records_frame

FIGURES = {"fig3_grad_norms": gradient_norm_bars, "fig4_hessian": hessian_bars, "fig6_drop": drop_by_budget,
           "fig9_mitigation": mitigation_bars, "bound": bound_against_excess_loss}


def main() -> None:
    parser = sweep_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default="figures")
    args = parser.parse_args()

    spec, _, records = finished_records(args)
    frame = records_frame(records.values(), [BUDGET, MU, METHOD, MITIGATION])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    group_frame(frame).to_csv(out / "per_group.csv", index=False)
    written = [out / "per_group.csv"]
    for name, draw in FIGURES.items():
        try:
            drawn = draw(frame)
        except LeftOut as why:
            print(f"{name}: left out ({why})")
            continue
        drawn.figure.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
        written.append(out / f"{name}.png")
        if name == "bound":
            holds = group_frame(frame)["bound_holds"].mean()
            print(f"Theorem 4.4's bound holds for {holds:.1%} of (trial, group) pairs")
    print(f"{len(records)} trials; wrote " + ", ".join(p.name for p in written) + f" to {out}")

    log_to_sweep_run(spec, written)


if __name__ == "__main__":
    main()
