"""`fairsweep report`: a sweep's figures (the paper's, mean ± std over seeds) and their tables, from
the trial runs MLflow holds, as PNGs, CSVs and one self-contained HTML page, logged to the sweep's run.

Every figure is a function of the table `report_frame` reads (`fairsweep.report.figures`,
`.mitigation`, `.search`), so any of them can be drawn again, or restyled, from MLflow alone
(analysis/README.md). A figure whose metrics the sweep lacks is left out, and the page says why.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fairsweep.report.figures import (BUDGET, METHOD, MITIGATION, MU, Drawn, LeftOut, bound_against_excess_loss,
                                      distance_and_diagnostics, drop_by_budget, gradient_norm_bars,
                                      group_accuracy_bars, hessian_bars)
from fairsweep.report.mitigation import mitigation_bars, mu_ablation, mu_effects
from fairsweep.report.page import Section, render
from fairsweep.report.search import front_figure, hypervolume_history, importances
from fairsweep.sweep.results import TABLE_METRICS, results_table, runs_frame

# (file name, title, caption) of each per-group figure, and its function of (trials, panels)
GROUP_FIGURES: list[tuple[str, str, str, Callable[..., Drawn]]] = [
    ("fig1_group_accuracy", "Figure 1: group accuracy by ReLU budget",
     "Each group's test accuracy of the base model (100% of its ReLUs) and of the linearized models "
     "finetuned by plain KD (µ = 0) at each budget, most ReLUs first; a group's test samples above its bars.",
     group_accuracy_bars),
    ("fig5_7_drop", "Figures 5–7: accuracy and relative drop by ReLU budget",
     "Top: the overall test accuracy against the ReLUs kept, the base model's as the red line (Figure 5). "
     "Bottom: each group's relative accuracy drop against the same seed's base model, "
     "(acc_base − acc) / acc_base × 100, and the overall drop (dashed), plain KD; a column per "
     "linearization method (Figures 6 and 7). The Matthew effect: minorities' drops grow fastest as ReLUs go.",
     drop_by_budget),
    ("fig3_grad_norms", "Figure 3: gradient norms by group",
     "The norm of the gradient of each group's loss with respect to the parameters, of the base model and "
     "of the plain-KD linearized models at each budget (Theorem 4.4's first term).", gradient_norm_bars),
    ("fig4_hessian", "Figure 4: top Hessian eigenvalues by group",
     "The top eigenvalue of the Hessian of each group's loss, of the base model (the paper's Figure 4) and of "
     "the plain-KD linearized models at each budget (Theorem 4.4's second term).", hessian_bars),
    ("fig8_distance_diagnostics", "Figure 8: parameter distance, gradient norms and margins",
     "Left: ‖θ̃ − θ‖, the distance of the linearized model's parameters from the base model's, against the "
     "ReLUs kept. Middle and right: at the tightest budget, each group's accuracy against its gradient norm "
     "and against its mean margin (softmax top-1 minus top-2 probability: the closeness to the decision "
     "boundary); plain KD.", distance_and_diagnostics),
    ("theorem_4_4", "Theorem 4.4: the bound against the actual excess loss",
     "Each group's bound ‖g‖·‖θ̃ − θ‖ + ½·λmax(H)·‖θ̃ − θ‖² (g, H of the base model) against its actual "
     "excess loss J(θ̃) − J(θ) on the test split, a point per group, budget and µ (symmetric log axes); the "
     "bound holds below the dotted diagonal.", bound_against_excess_loss),
    ("fig9_mitigation", "Figure 9: the mitigation against plain KD",
     "Each group's relative accuracy drop of the mitigated model against its plain-KD twin (the same trial "
     "with µ = 0), (acc_plainKD − acc) / acc_plainKD × 100, at each budget; a panel per µ and method. "
     "Negative: the mitigation raised the group's accuracy.", mitigation_bars),
    ("fig15_mu_ablation", "Figure 15: the µ ablation",
     "Each group's relative accuracy drop against the base model at each budget, a panel per µ of "
     "Algorithm 1 (µ = 0 is plain KD), sharing the y axis.", mu_ablation),
    ("mu_effects", "The µ ablation: accuracy, worst group and drop gap",
     "Overall accuracy, the worst group's accuracy and the drop gap (max − min of the groups' drops) against "
     "µ, a line per budget: what the mitigation buys and what it costs.", mu_effects),
]
SEARCH_FIGURES = ("importance", "hypervolume_history")


def report_frame(runs: list[dict], spec):
    """The trial runs as the report's figures take them (`runs_frame`): a row per run, its varied keys and
    the keys every figure reads (budget, method, µ, mitigation), its seed, end time and metrics."""
    varied = [k for k in spec.sweep.varied_keys if k != "seed"]
    return runs_frame(runs, list(dict.fromkeys([*varied, BUDGET, METHOD, MU, MITIGATION])))


def _section(name: str, title: str, caption: str, draw: Callable[[], Drawn]) -> Section:
    try:
        drawn = draw()
    except LeftOut as why:
        return Section(name, title, caption, left_out=str(why))
    buffer = io.BytesIO()
    drawn.figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return Section(name, title, f"{caption} {drawn.note}".strip(), buffer.getvalue(), drawn.tables, drawn.notes)


def sections(frame, spec) -> list[Section]:
    """Every figure of the report, drawn or left out, in the page's order."""
    from fairsweep.sweep.pareto import choose_objectives

    varied = [k for k in spec.sweep.varied_keys if k != "seed"]
    panels = [METHOD, *(k for k in varied if k not in (BUDGET, METHOD, MU, MITIGATION))]
    out = [_section(name, title, caption, lambda draw=draw: draw(frame, panels))
           for name, title, caption, draw in GROUP_FIGURES]
    objectives = choose_objectives(spec, [])
    out.append(_section("pareto_front", "The Pareto front",
                        f"Every configuration's seed means of {', '.join(f'{m} ({d})' for m, d in objectives.items())}; "
                        "the non-dominated ones numbered and outlined, each with the seed std of both axes as error "
                        "bars (as `fairsweep pareto`).", lambda: front_figure(frame, varied, objectives)))
    search = spec.sweep.search
    if search is None:
        why = "a grid sweep, not an Optuna search"
        out += [Section("importance", "Importance of the searched keys", "", left_out=why),
                Section("hypervolume_history", "Hypervolume history", "", left_out=why)]
        return out
    from fairsweep.sweep.search import distribution

    space = {key: distribution(param) for key, param in search.space.items()}
    out.append(_section("importance", "Importance of the searched keys",
                        "Optuna's fANOVA importance of each searched key for each objective, over the configurations' "
                        "seed means (what the study was told).", lambda: importances(frame, objectives, space)))
    out.append(_section("hypervolume_history", "Hypervolume history",
                        "The hypervolume of the front of the configurations finished so far, against the reference "
                        "point `fairsweep pareto` uses by default.",
                        lambda: hypervolume_history(frame, list(search.space), objectives)))
    return out


@dataclass
class Report:
    page: Path
    sections: list[Section]
    trials: int
    run_id: str

    @property
    def drawn(self) -> list[Section]:
        return [s for s in self.sections if not s.left_out]


def write_report(sweep, out: Path) -> Report:
    """The report of a sweep (`fairsweep.tracking.sweep_runs`) in `out`: `report.html`, `figures/*.png`,
    `tables/*.csv`; logged to the sweep's MLflow run under `report/`."""
    from datetime import datetime, timezone

    from fairsweep import __version__

    spec = sweep.spec
    frame = report_frame(sweep.runs, spec)
    drawn = sections(frame, spec)
    results = results_table(frame, spec.sweep.varied_keys, TABLE_METRICS)
    out = Path(out)
    for sub in ("figures", "tables"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob("*"):  # a figure left out this time leaves no older file behind
            if stale.suffix in (".png", ".csv") and stale.is_file():
                stale.unlink()
    if results is not None:
        results.to_csv(out / "tables" / "results.csv", index=False)
    for section in drawn:
        if section.png is not None:
            (out / "figures" / f"{section.name}.png").write_bytes(section.png)
        for name, table in section.tables.items():
            table.to_csv(out / "tables" / f"{section.name}-{name}.csv", index=False)
    parent = sweep.tracker.client.get_run(sweep.parent_run_id)
    planned = parent.data.params.get("sweep.num_trials", "?")
    meta = [("sweep", spec.name), ("MLflow experiment", spec.experiment),
            ("MLflow sweep run", f"{sweep.parent_run_id} ({parent.info.status})"),
            ("tracking URI", sweep.tracker.uri), ("trials", f"{len(sweep.runs)} finished of {planned} planned"),
            ("varied", ", ".join(spec.sweep.varied_keys)), ("dataset", f"{spec.data.dataset} (groups: {spec.data.group})"),
            ("made", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by fairsweep {__version__}")]
    page = out / "report.html"
    page.write_text(render(f"{spec.name}: report", meta, drawn, results), encoding="utf-8")
    sweep.tracker.log_report(sweep.parent_run_id, out)
    return Report(page, drawn, len(sweep.runs), sweep.parent_run_id)


def report_sweep(target: str, overrides: list[str], out: Path | None, tracking_uri: str, console) -> Report:
    """`fairsweep report TARGET`: the sweep of a spec file or the latest of an MLflow experiment
    (`fairsweep.tracking.sweep_runs`), its report in `out` (default `./NAME-report/`), a summary on
    `console`; a user's mistake (no such sweep, a bad `--set`) raises `UserError`."""
    from fairsweep.tracking import sweep_runs

    sweep = sweep_runs(target, overrides, tracking_uri)
    done = write_report(sweep, out if out is not None else Path(f"{sweep.spec.name}-report"))
    folder = done.page.parent
    console.print(f"{sweep.spec.name}: report of {done.trials} finished trials in {done.page}", highlight=False,
                  soft_wrap=True)
    console.print(f"  {len(done.drawn)} figures in {folder / 'figures'}: " + ", ".join(s.name for s in done.drawn)
                  + f"; their tables in {folder / 'tables'}", highlight=False, soft_wrap=True)
    for section in done.sections:
        if section.left_out:
            console.print(f"  left out: {section.title} ({section.left_out})", highlight=False, soft_wrap=True)
    console.print(f"logged to MLflow run {done.run_id} (report/)", highlight=False, soft_wrap=True)
    return done
