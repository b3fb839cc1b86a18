"""The paper's Figure 2 from a finished `sweeps/toy2d.yaml` sweep: the ReLU model's and the linearized
model's accuracy (overall, majority, minority; mean ± std over seeds) and their decision boundaries.

    fairsweep run sweeps/toy2d.yaml
    python analysis/toy2d_figure.py sweeps/toy2d.yaml [--storage fairsweep-runs] [--seed 0] [--out toy2d.png]

Reads the trial records and models from the sweep's stage store; prints the table, writes it as CSV
beside the figure, and logs both to the sweep's MLflow run when it finds one.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from sweep_results import finished_records, log_to_sweep_run, sweep_parser  # noqa: E402

from fairsweep.data import load_splits  # noqa: E402
from fairsweep.sweep.store import StageStore  # noqa: E402
from fairsweep.sweep.trial import build_model  # noqa: E402

MODELS = {"base": "ReLU model", "final": "linearized model"}


def accuracy_table(records: list[dict]) -> pd.DataFrame:
    """Per model (ReLU / linearized): overall and per-group test accuracy, mean and std over seeds."""
    rows = []
    for record in records:
        for key, label in MODELS.items():
            acc = record["accuracy"][key]
            rows.append({"model": label, "seed": record["spec"]["seed"], "overall": acc["overall"], **acc["by_group"]})
    frame = pd.DataFrame(rows)
    stats = frame.drop(columns="seed").groupby("model", sort=False).agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "seeds", frame.groupby("model", sort=False).size())
    return stats.reset_index()


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
        for cls, color in ((0, "tab:blue"), (1, "tab:red")):
            members = data.y == cls
            ax.scatter(data.x[members, 0], data.x[members, 1], s=5, c=color, label=data.group_names[cls])
        ax.plot(grid, 0.72 + 0.2 * torch.sin(math.pi * 1.5 * grid), "k:", linewidth=1.5, label="true boundary")
        ax.set_title(title)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = sweep_parser(__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the seed whose two models are drawn")
    parser.add_argument("--out", default="toy2d_boundaries.png")
    args = parser.parse_args()

    spec, plan, by_id = finished_records(args)
    records = list(by_id.values())
    store = StageStore(args.storage)

    table = accuracy_table(records)
    print(f"{len(records)} of {len(plan.trials)} trials; test accuracy, mean ± std over seeds")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    trial = next((t for t in plan.trials if t.spec.seed == args.seed and t.id in by_id), plan.trials[0])
    record = by_id[trial.id]
    models = {}
    for kind, label in (("base", "(a) ReLU model"), ("finetune", "(b) 50 % ReLUs linearized")):
        model = build_model(trial.spec, record["num_classes"], tuple(record["input_shape"]))
        model.load_state_dict(store.load(trial.stages[kind]).state)
        models[f"{label}, seed {trial.spec.seed}"] = model
    out = Path(args.out)
    plot_boundaries(models, load_splits(trial.spec.data, trial.spec.seed).test, out)
    csv = out.with_suffix(".csv")
    table.to_csv(csv, index=False)
    print(f"figure: {out}\ntable: {csv}")

    log_to_sweep_run(spec, [out, csv])


if __name__ == "__main__":
    main()
