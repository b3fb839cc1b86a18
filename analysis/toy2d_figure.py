"""The paper's Figure 2 from a finished `sweeps/toy2d.yaml` sweep: the ReLU model's and the linearized
model's accuracy (overall, majority, minority; mean ± std over seeds) and their decision boundaries.

    fairsweep run sweeps/toy2d.yaml
    python analysis/toy2d_figure.py sweeps/toy2d.yaml [--storage fairsweep-runs] [--seed 0] [--out PNG]

Reads the trial records and models from the sweep's stage store; prints the table with the paper's
numbers beside ours, writes it as CSV beside the figure (by default analysis/figures/toy2d_boundaries.png
and .csv), and logs both to the sweep's MLflow run when it finds one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from sweep_results import finished_records, log_to_sweep_run, sweep_parser  # noqa: E402

from fairsweep.data import load_splits  # noqa: E402
from fairsweep.data.embedded import toy2d_boundary  # noqa: E402
from fairsweep.sweep.store import StageStore  # noqa: E402

MODELS = {"base": "ReLU model", "final": "linearized model"}
METRICS = ("overall", "majority", "minority")
# The paper's Figure 2 (section 4 text), test accuracy as fractions; it gives no majority accuracy
# for the linearized model.
PAPER = {"ReLU model": {"overall": 0.993, "majority": 1.0, "minority": 0.930},
         "linearized model": {"overall": 0.990, "majority": float("nan"), "minority": 0.880}}
LOSS = "loss (ReLU − linearized)"  # the table's third row: the ReLU model's accuracy minus the linearized one's
DEFAULT_OUT = Path(__file__).resolve().parent / "figures" / "toy2d_boundaries.png"


def accuracy_table(records: list) -> pd.DataFrame:
    """Test accuracy (fractions), overall and per group, mean and std over seeds: one row per model
    (ReLU, linearized) and one for the ReLU model's minus the linearized model's at the same seed;
    `<metric>_paper` beside each mean is the paper's number (NaN where it gives none)."""
    rows = []
    for record in records:
        for key, label in MODELS.items():
            acc = record.accuracy[key]
            rows.append({"model": label, "seed": record.spec["seed"], "overall": acc.overall, **acc.by_group})
    frame = pd.DataFrame(rows).set_index(["model", "seed"])
    relu, linear = frame.loc[MODELS["base"]], frame.loc[MODELS["final"]]
    per_model = {MODELS["base"]: relu, MODELS["final"]: linear, LOSS: relu - linear}  # seeds aligned by index
    paper = {**PAPER, LOSS: {m: round(PAPER[MODELS["base"]][m] - PAPER[MODELS["final"]][m], 6) for m in METRICS}}
    table = []
    for label, values in per_model.items():
        row = {"model": label, "seeds": len(values)}
        for metric in METRICS:
            row |= {f"{metric}_mean": values[metric].mean(), f"{metric}_std": values[metric].std(),
                    f"{metric}_paper": paper[label][metric]}
        table.append(row)
    return pd.DataFrame(table)


def format_table(table: pd.DataFrame) -> str:
    """The table as printed: percent (points for the loss), `mean ± std` over seeds, the paper's number
    in the column beside."""
    header = ["", "seeds"] + [name for metric in METRICS for name in (metric, "paper")]
    lines = [header]
    for _, row in table.iterrows():
        line = [row["model"], str(row["seeds"])]
        for metric in METRICS:
            paper = row[f"{metric}_paper"]
            line += [f"{100 * row[f'{metric}_mean']:.2f} ± {100 * row[f'{metric}_std']:.2f}",
                     "–" if pd.isna(paper) else f"{100 * paper:.1f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


@torch.no_grad()
def plot_boundaries(models: dict[str, torch.nn.Module], data, path: Path) -> None:
    """Decision regions of each model over [-1, 1]², with the test points and the true boundary."""
    grid = torch.linspace(-1, 1, 300)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.6), sharey=True)
    for ax, (title, model) in zip(axes, models.items()):
        model.eval()
        minority_prob = model(points).softmax(1)[:, 1].view_as(xx)
        ax.contourf(xx, yy, minority_prob, levels=[0, 0.5, 1], colors=["#dbe6f5", "#f6d5d5"])
        ax.contour(xx, yy, minority_prob, levels=[0.5], colors="k", linewidths=1.2)
        ax.plot([], [], "k-", linewidth=1.2, label="decision boundary")  # the contour's legend entry
        for cls, color in ((0, "tab:blue"), (1, "tab:red")):
            members = data.y == cls
            ax.scatter(data.x[members, 0], data.x[members, 1], s=5, c=color, label=data.group_names[cls])
        curve = toy2d_boundary()
        ax.plot(curve[:, 0], curve[:, 1], "k:", linewidth=1.5, label="true boundary")
        ax.set_title(title)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.set_aspect("equal")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = sweep_parser(__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the seed whose two models are drawn")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="the figure (PNG); the table goes beside it as CSV (default: %(default)s)")
    args = parser.parse_args()

    spec, plan, by_id = finished_records(args)
    records = list(by_id.values())
    store = StageStore(args.storage)

    table = accuracy_table(records)
    print(f"{len(records)} of {len(plan.trials)} trials; test accuracy (%), mean ± std over seeds; "
          "paper: Das, Romanelli et al. (ICML 2024), Figure 2")
    print(format_table(table))

    trial = next((t for t in plan.trials if t.spec.seed == args.seed and t.id in by_id), plan.trials[0])
    models = {f"{label}, seed {trial.spec.seed}": store.load_model(trial.stages[kind])
              for kind, label in (("base", "(a) ReLU model"), ("finetune", "(b) 50 % ReLUs linearized"))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_boundaries(models, load_splits(trial.spec.data, trial.spec.seed).test, out)
    csv = out.with_suffix(".csv")
    table.to_csv(csv, index=False)
    print(f"figure: {out}\ntable: {csv}")

    log_to_sweep_run(spec, [out, csv])


if __name__ == "__main__":
    main()
