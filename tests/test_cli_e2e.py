"""`fairsweep run` end to end on a reduced digits_mu_ablation (1 seed, 2 budgets, 2 µ): Ray Tune schedules,
MLflow records, a re-run resumes without training anything, a failing trial gives exit status 1."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

from conftest import DIGITS_MU_ABLATION, NO_MODELS, ROOT, TINY_OVERRIDES, fairsweep_cli
from ray_nodes import kill_session, start_node
from fairsweep.data import load_splits
from fairsweep.spec import load_spec
from fairsweep.sweep.gc import no_sweep_running
from fairsweep.sweep.pareto import GRID_OBJECTIVES, pareto_front
from fairsweep.sweep.store import StageStore, StoredStage
from fairsweep.tracking import sweep_runs
from fairsweep.tracking.tracker import sweep_run_name

pytestmark = pytest.mark.slow

METRICS = ["acc", "drop_gap_pct", "acc_gap", "worst_group_acc", "relu_count"]


def run_args(*extra) -> list[str]:
    """The arguments of `fairsweep run` of the reduced digits_mu_ablation; `extra` holds more overrides, then
    other flags."""
    args = ["run", str(DIGITS_MU_ABLATION), "--storage", "runs"]
    overrides = [*TINY_OVERRIDES, *(e for e in extra if "=" in e and not e.startswith("-"))]
    for item in overrides:
        args += ["--set", item]
    return args + [e for e in extra if e not in overrides]


def run_cli(tmp_path, *extra):
    """That command as its own process: its exit status, all it writes (Ray's and MLflow's lines too)."""
    return subprocess.run([sys.executable, "-m", "fairsweep", *run_args(*extra)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)


def run_here(tmp_path, *extra):
    """That command in this process, on the module's Ray (`local_ray`): for what needs no process of its own."""
    return fairsweep_cli(*run_args(*extra), cwd=tmp_path)


def stage_dirs(tmp_path):
    return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "stages").glob("*/*")}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, local_ray):
    tmp_path = tmp_path_factory.mktemp("sweep")
    first = run_cli(tmp_path)  # a process: its stderr is all it writes (test_a_quiet_run_writes_nothing_to_stderr)
    stages_after_first = stage_dirs(tmp_path)
    second = run_here(tmp_path)
    return tmp_path, first, second, stages_after_first


def test_sweep_runs_and_prints_the_table(swept):
    tmp_path, first, _, stages = swept
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "4/4 trials finished (0 from earlier runs)" in out
    assert "stages trained now (of unique): base 1/1, linearize 2/2, finetune 4/4" in out
    assert "mean ± std over seeds" in out and "worst_group_acc" in out and "drop_gap_pct" in out
    assert "mitigation_drop_pct" in out
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in out
    assert re.search(r"open its trial runs at http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType="
                     r"machine_learning&viewStateShareKey=[0-9a-f]{32}", out), out
    assert sorted(k.split("-")[0] for k in stages) == ["base", "diagnose", "finetune", "finetune", "finetune",
                                                       "finetune", "linearize", "linearize"]


def test_mlflow_has_parent_and_child_runs_with_params_and_metrics(swept, monkeypatch):
    tmp_path = swept[0]
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"])
    parents = runs[runs["tags.fairsweep.role"] == "sweep"]
    children = runs[runs["tags.fairsweep.role"] == "trial"]
    assert len(parents) == 1 and len(children) == 4
    assert (children["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    assert (children["status"] == "FINISHED").all()
    assert sorted(zip(children["params.linearize.budget"], children["params.finetune.mu"])) == [
        ("0.03", "0.0"), ("0.03", "0.01"), ("0.1", "0.0"), ("0.1", "0.01")]
    assert set(children["params.seed"]) == {"0"} and set(children["params.data.dataset"]) == {"digits"}
    for key in METRICS + [f"group_acc/{g}" for g in range(10)] + [f"group_drop_pct/{g}" for g in range(10)]:
        assert children[f"metrics.{key}"].notna().all(), key
    assert set(children["metrics.relu_count"]) == {round(0.03 * 2048), round(0.1 * 2048)}
    # per-epoch curves: SNL's λ and live count, the finetune multipliers
    client = mlflow.MlflowClient()
    run_id = children[children["params.finetune.mu"] == "0.01"]["run_id"].iloc[0]
    live = [m.value for m in client.get_metric_history(run_id, "linearize/live_relus")]
    assert live[0] > live[-1] and len(client.get_metric_history(run_id, "finetune/multiplier/9")) == 2
    # live curves: the first trial's points reached its run while it trained (before its final metrics), each once
    trainer = client.get_run(children[children["metrics.stage_seconds/base"].notna()]["run_id"].iloc[0])
    done_at = client.get_metric_history(trainer.info.run_id, "acc")[0].timestamp
    for key in ("base/loss", "base/val_acc", "linearize/live_relus", "linearize/lambda"):
        points = client.get_metric_history(trainer.info.run_id, key)
        assert sorted(p.step for p in points) == list(range(len(points))), key  # each epoch once
    base_points = client.get_metric_history(trainer.info.run_id, "base/loss")
    assert min(p.timestamp for p in base_points) < done_at - 1000  # seconds before the trial finished
    # the paper's diagnostics for every group
    for key in ("group_grad_norm", "group_margin", "group_hessian_eig", "bound", "excess_loss", "base_group_grad_norm"):
        assert all(children[f"metrics.{key}/{g}"].notna().all() for g in range(10)), key
    # Figure 9: the µ > 0 trials against their µ = 0 twins, once even after the re-run
    mitigated = children["params.finetune.mu"] == "0.01"
    assert children[mitigated]["metrics.mitigation_drop_pct/5"].notna().all()
    assert children[~mitigated]["metrics.mitigation_drop_pct/5"].isna().all()
    assert len(client.get_metric_history(run_id, "mitigation_drop_pct/5")) == 1
    # the source (this repository's commit), each stage's seconds where the trial trained it, the splits
    assert (children["tags.mlflow.source.git.commit"].str.len() == 40).all()
    assert children["metrics.stage_seconds/finetune"].notna().all()
    assert children["metrics.stage_seconds/base"].notna().sum() == 1  # one trial trained it, the others reused it
    assert children["metrics.stage_seconds/linearize"].notna().sum() == 2
    assert sorted(i.tags[0].value for i in client.get_run(run_id).inputs.dataset_inputs) == ["test", "train", "val"]
    # a trial's run starts when the trial did and lasts as long as it ran, not as long as its logging
    for record in records(tmp_path):
        run = client.get_run(children.loc[children["tags.fairsweep.trial_id"] == record["trial_id"], "run_id"].iloc[0])
        timing = record["timing"]
        assert run.info.start_time == int(timing["started"] * 1000)
        assert run.info.end_time - run.info.start_time == pytest.approx(timing["seconds"] * 1000, abs=1)
        assert run.data.metrics["trial_seconds"] == pytest.approx(timing["seconds"])


def analysis_script(tmp_path, script: str, *extra: str) -> subprocess.CompletedProcess:
    """analysis/SCRIPT on the fixture's finished sweep (its spec, overrides and storage), then `extra`."""
    args = [sys.executable, str(ROOT / "analysis" / script), str(DIGITS_MU_ABLATION), "--storage", "runs", *extra]
    for item in TINY_OVERRIDES:
        args += ["--set", item]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_paper_figures_from_the_finished_sweep(swept):
    tmp_path = swept[0]
    result = analysis_script(tmp_path, "paper_figures.py", "--out", "figures")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 trials; wrote per_group.csv" in result.stdout and "logged to MLflow run" in result.stdout
    for name in ("fig3_grad_norms", "fig4_hessian", "fig6_drop", "fig9_mitigation", "bound"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 0
    table = pd.read_csv(tmp_path / "figures" / "per_group.csv")
    assert len(table) == 4 * 10 and table["mitigation_drop_pct"].notna().sum() == 2 * 10  # µ > 0 trials only
    assert re.search(r"Theorem 4.4's bound holds for [\d.]+% of \(trial, group\) pairs", result.stdout)


REPORT_FIGURES = {"fig1_group_accuracy", "fig5_7_drop", "fig3_grad_norms", "fig4_hessian", "fig8_distance_diagnostics",
                  "theorem_4_4", "fig9_mitigation", "fig15_mu_ablation", "mu_effects", "pareto_front"}


def per_run(children, metric: str, group):
    """A report table's metric for each MLflow run, recomputed here from the runs' own columns."""
    def m(key):
        return children[f"metrics.{key}"]

    def base_group(g):  # the base model's accuracy on g: none right where the drop is NaN
        return (m(f"group_acc/{g}") / (1 - m(f"group_drop_pct/{g}") / 100)).where(m(f"group_drop_pct/{g}").notna(), 0.0)

    groups = [c.split("/")[-1] for c in children if c.startswith("metrics.group_size/test/")]
    base_acc = sum(base_group(g) * m(f"group_size/test/{g}") for g in groups) / sum(m(f"group_size/test/{g}") for g in groups)
    derived = {"relu_pct": lambda: m("relu_fraction") * 100, "base_acc": lambda: base_acc,
               "drop_pct": lambda: (base_acc - m("acc")) / base_acc * 100,
               "test_size": lambda: m(f"group_size/test/{group}"), "train_size": lambda: m(f"group_size/train/{group}"),
               "base_group_acc": lambda: base_group(group),
               "bound_holds": lambda: (m(f"excess_loss/{group}") <= m(f"bound/{group}")).astype(float)}
    if metric in derived:
        return derived[metric]()
    return m(f"{metric}/{group}") if group is not None and f"metrics.{metric}/{group}" in children else m(metric)


def same_value(param: str, value) -> bool:
    try:
        return float(param) == float(value)
    except ValueError:
        return str(param) == str(value)


def recompute(children, row):
    """(mean, std, count) of each `<m>_mean` metric of a report table's row over the MLflow runs its keys
    name; a `base` budget is the base model's (its `base_` metric, one run per seed)."""
    runs = children
    for key in [k for k in row.index if "." in k and not (k == "linearize.budget" and row[k] == "base")]:
        runs = runs[runs[f"params.{key}"].map(lambda p, v=row[key]: same_value(p, v))]
    base = row.get("linearize.budget") == "base"
    if base:
        runs = runs.drop_duplicates("params.seed")
    group = row.get("group")
    out = {}
    for metric in [c[:-len("_mean")] for c in row.index if c.endswith("_mean")]:
        source = f"base_{metric}" if base and metric.startswith("group_") else metric
        values = per_run(runs, source, None if pd.isna(group) else str(group)).dropna()
        out[metric] = (values.mean(), values.std(), len(values))
    return out


def shown_numbers(text: str):
    """A page's `mean ± std` cell as numbers, each with how far from the true value its rounding may be."""
    if text == "—":
        return []
    numbers = []
    for part in text.split(" ± "):
        decimals = len(part.split(".")[1]) if "." in part and "e" not in part else 0
        numbers.append((float(part), 5e-4 * abs(float(part)) if "e" in part else 0.5 * 10 ** -decimals + 1e-12))
    return numbers


def test_report_of_the_finished_sweep_draws_every_figure_with_the_numbers_mlflow_holds(swept, monkeypatch):
    from test_report import Cells

    tmp_path = swept[0]
    sets = [arg for item in TINY_OVERRIDES for arg in ("--set", item)]
    result = fairsweep_cli("report", str(DIGITS_MU_ABLATION), *sets, "--out", "report", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "report"
    assert {p.stem for p in (out / "figures").glob("*.png")} == REPORT_FIGURES
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in (out / "figures").glob("*.png"))
    assert "left out: Importance of the searched keys (a grid sweep, not an Optuna search)" in result.stdout
    page = Cells()
    page.feed((out / "report.html").read_text())
    assert len(page.sources) == len(REPORT_FIGURES) and all(s.startswith("data:image/png;base64,") for s in page.sources)
    parent = re.search(r"logged to MLflow run (\w+) \(report/\)", result.stdout)[1]
    # the oracle: the sweep's finished trial runs, straight from MLflow, recomputed with pandas
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"])
    children = runs[(runs["tags.mlflow.parentRunId"] == parent) & (runs["tags.fairsweep.role"] == "trial")]
    assert len(children) == 4
    checked = 0
    for csv_path in sorted((out / "tables").glob("*.csv")):
        table = pd.read_csv(csv_path)
        cells = page.tables[csv_path.stem]
        header, rows = cells[0], cells[1:]
        assert len(rows) == len(table), csv_path.name
        for (_, row), shown in zip(table.iterrows(), rows):
            expected = recompute(children, row)
            on_page = dict(zip(header, shown))
            for metric, (mean, std, count) in expected.items():
                assert row[f"{metric}_mean"] == pytest.approx(mean, nan_ok=True), (csv_path.name, metric, dict(row))
                if f"{metric}_std" in row:
                    assert row[f"{metric}_std"] == pytest.approx(std, nan_ok=True), (csv_path.name, metric)
                if f"{metric}_count" in row:
                    assert row[f"{metric}_count"] == count, (csv_path.name, metric)
                for (number, tolerance), truth in zip(shown_numbers(on_page[metric]), (mean, std)):
                    assert abs(number - truth) <= tolerance, (csv_path.name, metric, on_page[metric], truth)
                checked += 1
    assert checked > 300
    # the base model's accuracy, derived from the runs' metrics, is the trial records' own
    base = pd.read_csv(out / "tables" / "fig5_7_drop-overall.csv")["base_acc_mean"].unique()
    assert sorted(base) == pytest.approx(sorted({r["accuracy"]["base"]["overall"] for r in records(tmp_path)}))
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(parent, "report")}
    assert {"report/report.html", "report/figures", "report/tables"} <= logged
    # analysis/README.md's snippet redraws Figure 1 from MLflow alone
    snippet = re.search(r"```python\n(.*?)```", (ROOT / "analysis" / "README.md").read_text(), re.S)[1]
    (tmp_path / "snippet.py").write_text(snippet)
    ran = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "fig1.png").stat().st_size > 0 and "group_acc_mean" in pd.read_csv(tmp_path / "fig1.csv")


def test_effects_script_reads_the_finished_sweep_and_fails_without_seed_spread(swept):
    result = analysis_script(swept[0], "mu_ablation_effects.py")
    # one seed: no std, so neither effect can be shown beyond the spread
    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 finished trials" in result.stdout and "FAIL Matthew effect" in result.stdout
    assert len([line for line in result.stdout.splitlines() if line.strip().startswith(("0.03 ", "0.1 "))]) == 4


def test_the_fronts_models_are_logged_once_and_load_by_models_uri_on_raw_inputs(swept, monkeypatch):
    tmp_path = swept[0]
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"], filter_string="tags.`fairsweep.role` = 'trial'")
    # tracking.log_models: front (the default): the models of the sweep's Pareto front, each once
    sweep = sweep_runs(str(DIGITS_MU_ABLATION), TINY_OVERRIDES, "sqlite:///mlflow.db")
    front = pareto_front(sweep.runs, ["linearize.budget", "finetune.mu"], GRID_OBJECTIVES)
    on_front = {run_id for ids in front.front["run_ids"] for run_id in ids}
    with_model = {run_id: client.get_run(run_id).outputs.model_outputs for run_id in runs["run_id"]}
    assert on_front and {run_id for run_id, outputs in with_model.items() if outputs} == on_front
    logged = mlflow.search_logged_models(experiment_ids=[runs["experiment_id"].iloc[0]], output_format="list")
    assert sorted(m.source_run_id for m in logged) == sorted(on_front)  # the re-run logged none again
    row = runs[runs["run_id"] == sorted(on_front)[0]].iloc[0]
    model_id = with_model[row["run_id"]][0].model_id
    model = mlflow.pytorch.load_model(f"models:/{model_id}")
    spec = load_spec(DIGITS_MU_ABLATION, TINY_OVERRIDES)
    test = load_splits(spec.data, seed=0).test
    # it takes digits' raw pixel values (0..16) and standardises them inside, exactly as the loader did
    mean, std = test.standardized
    raw = torch.round(test.x * std + mean)
    assert raw.min() == 0 and raw.max() == 16
    stored = StageStore(tmp_path / "runs").load_model(StoredStage(row["tags.fairsweep.stage.finetune"]))
    with torch.no_grad():
        assert torch.equal(model(raw), stored(test.x))
        acc = float((model(raw).argmax(1) == test.y).double().mean())
    assert acc == pytest.approx(row["metrics.acc"], abs=1e-9)
    # the logged model carries the trial's final metrics, once each, and says what it takes
    (found,) = [m for m in logged if m.model_id == model_id]
    assert [m.value for m in found.metrics if m.key == "acc"] == [pytest.approx(row["metrics.acc"], abs=1e-12)]
    assert {m.key for m in found.metrics} >= {"worst_group_acc", "drop_gap_pct", "relu_count"}
    assert "standardised inside" in found.tags["fairsweep.inputs"]


def test_pareto_register_registers_the_fronts_models_once(swept, monkeypatch):
    tmp_path = swept[0]
    args = ["pareto", str(DIGITS_MU_ABLATION), "--storage", "runs", "--register", "digits-front",
            *[a for item in TINY_OVERRIDES for a in ("--set", item)]]
    first = fairsweep_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    again = fairsweep_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    monkeypatch.chdir(tmp_path)
    client = mlflow.MlflowClient("sqlite:///mlflow.db")
    versions = client.search_model_versions("name = 'digits-front'")
    runs = {v.run_id for v in versions}
    assert len(versions) == len(runs) > 0  # one version per run of the front, the second command added none
    assert f"{len(versions)} versions added" in first.stderr or "1 version added" in first.stderr
    assert "0 versions added" in again.stderr and f"{len(versions)} of the front's runs registered before" in again.stderr
    for version in versions:
        assert version.source.startswith("models:/m-")
        assert set(json.loads(version.tags["fairsweep.objectives"])) == set(GRID_OBJECTIVES)
        assert float(version.tags["trial.acc"]) == pytest.approx(client.get_run(version.run_id).data.metrics["acc"],
                                                                 rel=1e-5)
    loaded = mlflow.pytorch.load_model(f"models:/digits-front/{versions[0].version}")
    assert loaded(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_tune_writes_its_json_results_but_no_csv_or_tensorboard_files(swept):
    tmp_path = swept[0]
    trial_dirs = [p for p in (tmp_path / "runs" / "tune").glob("*/*") if p.is_dir()]
    assert len(trial_dirs) == 4  # the first run's trials; the re-run handed Tune none
    assert all((d / "result.json").stat().st_size > 0 for d in trial_dirs)
    names = {p.name for d in trial_dirs for p in d.iterdir()}
    assert "progress.csv" not in names and not any(name.startswith("events.out.tfevents") for name in names)


def test_rerun_resumes_without_training_or_duplicate_runs(swept, monkeypatch):
    tmp_path, _, second, stages = swept
    assert second.returncode == 0, second.stdout + second.stderr
    assert "4/4 trials finished (4 from earlier runs)" in second.stdout
    assert "stages trained now (of unique): base 0/1, linearize 0/2, finetune 0/4" in second.stdout
    assert stage_dirs(tmp_path) == stages  # nothing rewritten
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri("sqlite:///mlflow.db")
    assert len(mlflow.search_runs(experiment_names=["digits_mu_ablation"])) == 5


@pytest.mark.parametrize("change", ["data.min_group_size=3", "data.root=/elsewhere"])
def test_a_check_or_where_the_files_live_changes_no_stage(swept, change):
    sets = [arg for item in [*TINY_OVERRIDES, change] for arg in ("--set", item)]
    result = fairsweep_cli("validate", str(DIGITS_MU_ABLATION), "--storage", "runs", *sets, cwd=swept[0])
    assert result.returncode == 0, result.stderr
    rows = [line.split("│")[1:4] for line in result.stdout.splitlines() if line.count("│") > 3]
    assert [[cell.strip() for cell in row] for row in rows] == [["base", "1", "1"], ["linearize", "2", "2"],
                                                                 ["finetune", "4", "4"]]


def test_a_quiet_run_writes_nothing_to_stderr(swept):
    first = swept[1]  # neither Ray's token-authentication notice nor MLflow's table creation
    assert first.stderr == "", first.stderr


def test_adding_a_mu_trains_only_the_new_finetunings(swept):
    tmp_path = swept[0]
    result = run_here(tmp_path, "finetune.mu=[0,0.01,0.005]")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stages trained now (of unique): base 0/1, linearize 0/2, finetune 2/6" in result.stdout
    # MLflow: the 4 trials logged by the first sweep are the new sweep's too, not logged again
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits_mu_ablation").experiment_id
    trials = client.search_runs([experiment], "tags.`fairsweep.role` = 'trial'")
    first, wider = client.search_runs([experiment], "tags.`fairsweep.role` = 'sweep'", order_by=["attributes.start_time"])
    overrides = [*TINY_OVERRIDES, "finetune.mu=[0,0.01,0.005]"]
    assert wider.info.run_name == sweep_run_name("digits_mu_ablation", overrides) != first.info.run_name
    assert wider.info.run_name.endswith("finetune.epochs=2 finetune.mu=[0,0.01,0.005]")
    assert len(trials) == 6 and sum(f"fairsweep.sweep.{wider.info.run_id}" in r.data.tags for r in trials) == 6
    assert sum(r.data.tags["mlflow.parentRunId"] == first.info.run_id for r in trials) == 4


def test_a_failing_trial_is_listed_and_exits_1(tmp_path, local_ray):
    result = run_here(tmp_path, "linearize.snl.max_epochs=1", "linearize.snl.lambda_init=1e-9",
                     "linearize.budget=[0.01]", "finetune.mu=[0]", "resources.max_failures=0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 trial(s) failed" in result.stdout
    assert re.search(r"seed=0,budget=0.01,mu=0: .*SNL did not reach its budget", " ".join(result.stdout.split()))


def test_another_sweep_sharing_storage_reuses_trials_and_names_them_its_way(swept):
    tmp_path = swept[0]
    # the fixture's trials at budget 0.1, from a spec whose grid varies µ only
    raw = yaml.safe_load(DIGITS_MU_ABLATION.read_text())
    del raw["sweep"]["grid"]["linearize.budget"]
    raw["linearize"]["budget"] = 0.1
    (tmp_path / "mu_only.yaml").write_text(yaml.safe_dump(raw))
    cmd = ["run", "mu_only.yaml", "--storage", "runs", "--set", NO_MODELS]
    for item in TINY_OVERRIDES:
        if not item.startswith("linearize.budget"):
            cmd += ["--set", item]
    result = fairsweep_cli(*cmd, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 trials finished (2 from earlier runs)" in result.stdout
    assert "base 0/1, linearize 0/1, finetune 0/2" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["0.0", "0.01"]  # grouped by this sweep's grid


@pytest.fixture(scope="module")
def two_nodes():
    """A real two-node Ray cluster on this machine, started with `ray start` as a user would: a head with
    1 CPU and a worker node with 1 CPU and a resource of its own, on ports of their own; yields the
    head's address and the worker node's session (to kill it)."""
    temp = Path(tempfile.mkdtemp(prefix="fsray"))  # short: Ray's socket paths live under it
    head = start_node(6480, temp, num_cpus=1)
    try:
        worker = start_node(6450, temp, num_cpus=1, head="127.0.0.1:6480", resources='{"worker_node": 1}')
        try:
            yield "127.0.0.1:6480", worker
        finally:
            kill_session(worker)
    finally:
        kill_session(head)
        shutil.rmtree(temp, ignore_errors=True)


def test_resources_no_node_has_are_an_error_at_once(tmp_path, two_nodes):
    # the cluster has 2 CPUs in all, but no node has 2: a trial could never be placed
    result = run_cli(tmp_path, "resources.cpus_per_trial=2", "resources.gpus_per_trial=1", "--address", two_nodes[0])
    assert result.returncode == 2, result.stdout + result.stderr
    text = " ".join(result.stderr.split())
    assert ("`resources.cpus_per_trial` is 2.0 but the largest node of the Ray cluster at 127.0.0.1:6480 has 1 CPUs"
            in text)
    assert "`resources.gpus_per_trial` is 1.0 but the largest node of the Ray cluster" in text and "has 0 GPUs" in text


def test_trials_run_on_both_nodes_and_the_sweep_survives_losing_one(tmp_path, two_nodes):
    address, worker = two_nodes
    args = [sys.executable, "-m", "fairsweep", "run", str(DIGITS_MU_ABLATION), "--storage", "runs", "--address", address]
    for item in [*TINY_OVERRIDES, NO_MODELS, "finetune.mu=[0,0.005,0.01]", "resources.max_failures=3"]:
        args += ["--set", item]
    driver = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        nodes = set()
        while len(nodes) < 2 and driver.poll() is None:  # kill the worker node once both have finished a trial
            nodes = {r["worker"]["node"] for r in records(tmp_path)}
            time.sleep(0.2)
        done_when_killed = len(records(tmp_path))
        kill_session(worker)
        out, _ = driver.communicate(timeout=600)
    finally:
        kill_session(driver.pid)
    assert driver.returncode == 0, out
    assert len(nodes) == 2 and done_when_killed < 6
    assert "6/6 trials finished (0 from earlier runs)" in out
    assert len(records(tmp_path)) == 6


def records(tmp_path):
    return [json.loads(p.read_text()) for p in (tmp_path / "runs" / "trials").glob("*.json")]


def read_lines(driver: subprocess.Popen) -> tuple[list[str], threading.Thread]:
    """The driver's output lines as they come, read on a thread of their own (so its pipe never fills)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    reader.start()
    return lines, reader


def wait_for_a_record(tmp_path, driver: subprocess.Popen, lines: list[str], timeout: float = 300) -> None:
    """Until the first trial's record is stored (the driver still running); fails, with its output, if none is."""
    deadline = time.time() + timeout
    while not records(tmp_path) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert records(tmp_path), "".join(lines)


def test_sigkill_of_the_driver_then_rerun_finishes_only_what_is_missing(tmp_path, local_ray):
    args = [sys.executable, "-m", "fairsweep", "run", str(DIGITS_MU_ABLATION), "--storage", "runs"]
    for item in [*TINY_OVERRIDES, NO_MODELS, "finetune.mu=[0,0.0005,0.005,0.01]"]:
        args += ["--set", item]
    driver = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    lines, _ = read_lines(driver)
    try:  # kill it as soon as the first trial's record is stored (its "[1/8]" line can lag behind, see below)
        wait_for_a_record(tmp_path, driver, lines)
        kill_session(driver.pid)  # the driver and every Ray process it started, as in a crash
    finally:
        driver.wait(60)
    assert driver.returncode == -signal.SIGKILL
    stored = {kind: len(list((tmp_path / "runs" / "stages" / kind).glob("*"))) for kind in ("base", "linearize",
                                                                                           "finetune")}
    assert stored["base"] == 1 and stored["finetune"] < 8
    result = fairsweep_cli(*args[3:], cwd=tmp_path)  # the same command, in this process
    assert result.returncode == 0, result.stdout + result.stderr
    done_before = int(re.search(r"8/8 trials finished \((\d+) from earlier runs\)", result.stdout).group(1))
    assert done_before >= 1
    assert (f"base 0/1, linearize {2 - stored['linearize']}/2, finetune {8 - stored['finetune']}/8"
            in result.stdout)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"], filter_string="tags.`fairsweep.role` = 'trial'")
    assert len(runs) == 8 and runs["tags.fairsweep.trial_id"].nunique() == 8 and (runs["status"] == "FINISHED").all()


@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_an_interrupted_sweep_says_so_keeps_what_finished_and_resumes_to_the_same_results(
        tmp_path, swept, signum, to_group, local_ray):
    """Ctrl-C in a terminal signals the whole process group (the driver and the Ray processes it started);
    SIGTERM comes to the driver alone. Either stops the sweep, exit 128 + the signal, the sweep's run KILLED."""
    args = [sys.executable, "-m", "fairsweep", "run", str(DIGITS_MU_ABLATION), "--storage", "runs"]
    for item in [*TINY_OVERRIDES, NO_MODELS]:
        args += ["--set", item]
    driver = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    # Interrupt as soon as the first trial's record is stored, not at its "[1/4]" line: that line comes once
    # the trial is logged to MLflow, which on a loaded machine can lag until the other three have finished
    # (seen once: 4/4 finished).
    lines, reader = read_lines(driver)
    try:
        wait_for_a_record(tmp_path, driver, lines)
        with no_sweep_running(tmp_path / "runs") as alone:  # what `fairsweep gc` asks (tests/test_gc.py)
            assert not alone  # the running driver holds the storage's sweep lock
        os.killpg(driver.pid, signum) if to_group else driver.send_signal(signum)
        driver.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        kill_session(driver.pid)
    out = "".join(lines)
    assert driver.returncode == 128 + signum, out
    finished = int(re.search(r"interrupted: (\d)/4 trials finished; run the same command to resume", out).group(1))
    assert 1 <= finished < 4, out
    assert "Traceback" not in out and "FileNotFoundError" not in out and "result.json" not in out, out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"])
    assert list(runs.loc[runs["tags.fairsweep.role"] == "sweep", "status"]) == ["KILLED"]
    trial_runs = runs[runs["tags.fairsweep.role"] == "trial"]
    assert len(records(tmp_path)) == finished == (trial_runs["status"] == "FINISHED").sum()
    # a trial stopped while it trained keeps its live curves in a KILLED run, which the re-run replaces
    assert set(trial_runs.loc[trial_runs["status"] != "FINISHED", "status"]) <= {"KILLED"}

    rerun = fairsweep_cli(*args[3:], cwd=tmp_path)  # the same command, in this process
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"4/4 trials finished ({finished} from earlier runs)" in rerun.stdout
    # the same trials as the uninterrupted fixture sweep's, with the same metrics
    def metrics(path, ids):  # as text: NaN equals NaN
        return json.dumps({r["trial_id"]: r["metrics"] for r in records(path) if r["trial_id"] in ids}, sort_keys=True)

    ids = {r["trial_id"] for r in records(tmp_path)}
    assert len(ids) == 4 and metrics(tmp_path, ids) == metrics(swept[0], ids)
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"])
    assert list(runs.loc[runs["tags.fairsweep.role"] == "sweep", "status"]) == ["FINISHED"]
    assert list(runs.loc[runs["tags.fairsweep.role"] == "trial", "status"]) == ["FINISHED"] * 4


@pytest.fixture
def small_disk(tmp_path):
    """`tmp_path/runs` on a 64 MiB tmpfs of its own (where this machine lets the test mount one)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(runs)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill a disk: {mounted.stderr.decode().strip() or 'not root'}")
    try:
        yield runs
    finally:
        subprocess.run(["umount", "-l", str(runs)], capture_output=True)


def test_a_full_disk_stops_the_sweep_with_a_summary_and_the_rerun_finishes(tmp_path, swept, small_disk, local_ray):
    """The storage's disk fills once the first trial has its record: the sweep ends with what finished and
    why, exit 1, its MLflow run FAILED; with space again, the same command finishes the uninterrupted sweep."""
    filler = small_disk / "filler"

    def fill_after_the_first_record():
        while not list((small_disk / "trials").glob("*.json")):
            time.sleep(0.05)
        try:
            with open(filler, "wb") as handle:
                while True:
                    handle.write(b"\0" * 2**20)
                    handle.flush()
        except OSError:  # full
            pass

    thread = threading.Thread(target=fill_after_the_first_record, daemon=True)
    thread.start()
    full = run_cli(tmp_path, NO_MODELS)
    thread.join(timeout=60)
    out = full.stdout + full.stderr
    assert full.returncode == 1, out
    text = " ".join(full.stderr.split())
    stopped = re.search(r"stopped: (\d)/4 trials finished \(their records are kept under runs/trials\)", text)
    assert stopped, out
    finished = int(stopped.group(1))
    assert 1 <= finished < 4 and "MiB free (no space left?)" in text and "Traceback" not in out, out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"])
    assert list(runs.loc[runs["tags.fairsweep.role"] == "sweep", "status"]) == ["FAILED"]

    filler.unlink()
    rerun = run_here(tmp_path, NO_MODELS)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"4/4 trials finished ({finished} from earlier runs)" in rerun.stdout
    ids = {r["trial_id"] for r in records(tmp_path)}
    ours = {r["trial_id"]: r["metrics"] for r in records(tmp_path)}
    uninterrupted = {r["trial_id"]: r["metrics"] for r in records(swept[0]) if r["trial_id"] in ids}
    assert len(ids) == 4 and json.dumps(ours, sort_keys=True) == json.dumps(uninterrupted, sort_keys=True)
    runs = mlflow.search_runs(experiment_names=["digits_mu_ablation"])
    assert list(runs.loc[runs["tags.fairsweep.role"] == "sweep", "status"]) == ["FINISHED"]


def test_toy2d_sweep_and_its_figure_2(tmp_path, local_ray, monkeypatch):
    """sweeps/toy2d.yaml end to end (shortened, as two Tuner runs of a trial each), then analysis/toy2d_figure.py
    on its results."""
    from fairsweep.sweep import tune_backend

    overrides = ["seed=[0,1]", "base.epochs=3", "finetune.epochs=3"]
    sets = [arg for item in overrides for arg in ("--set", item)]
    toy2d = ROOT / "sweeps" / "toy2d.yaml"
    monkeypatch.setattr(tune_backend, "TRIALS_PER_TUNER", 1)  # as a grid longer than a Tuner run
    ran = fairsweep_cli("run", str(toy2d), "--storage", "runs", *sets, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2/2 trials finished" in ran.stdout
    experiments = sorted((tmp_path / "runs" / "tune").iterdir())
    assert [len([t for t in e.iterdir() if t.is_dir()]) for e in experiments] == [1, 1]
    figure = subprocess.run([sys.executable, str(ROOT / "analysis" / "toy2d_figure.py"), str(toy2d), "--storage", "runs",
                             "--out", "toy2d.png", *sets], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert figure.returncode == 0, figure.stdout + figure.stderr
    table = pd.read_csv(tmp_path / "toy2d.csv").set_index("model")
    assert list(table.index) == ["ReLU model", "linearized model", "loss (ReLU − linearized)"]
    assert set(table["seeds"]) == {2}
    assert {"overall_mean", "majority_mean", "minority_mean", "minority_std"} <= set(table.columns)
    # the loss row is the per-seed difference of the two models; its mean, the difference of their means
    relu, linear, loss = (table.loc[row] for row in table.index)
    for metric in ("overall", "majority", "minority"):
        assert loss[f"{metric}_mean"] == pytest.approx(relu[f"{metric}_mean"] - linear[f"{metric}_mean"])
    # the paper's numbers beside ours, in the CSV (fractions) and in the printed table (percent)
    assert list(relu[["overall_paper", "majority_paper", "minority_paper"]]) == [0.993, 1.0, 0.93]
    assert linear["overall_paper"] == 0.99 and pd.isna(linear["majority_paper"]) and linear["minority_paper"] == 0.88
    printed = figure.stdout.splitlines()
    rows = {name: next(line for line in printed if line.startswith(name)) for name in table.index}
    assert re.search(r"99\.3\s.*100\.0\s.*93\.0$", rows["ReLU model"])
    assert re.search(r"99\.0\s.*–\s.*88\.0$", rows["linearized model"])
    assert f"{100 * relu['minority_mean']:.2f} ± {100 * relu['minority_std']:.2f}" in rows["ReLU model"]
    assert (tmp_path / "toy2d.png").stat().st_size > 0 and "logged to MLflow run" in figure.stdout
    # by default the figure goes to analysis/figures/, whatever the working directory
    usage = subprocess.run([sys.executable, str(ROOT / "analysis" / "toy2d_figure.py"), "--help"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    unwrapped = "".join(usage.stdout.split())  # argparse wraps the path at its hyphens too
    assert "".join(str(ROOT / "analysis" / "figures" / "toy2d_boundaries.png").split()) in unwrapped


def test_mlflow_sends_no_usage_reports_from_a_sweep_process():
    code = ("from fairsweep.tracking import Tracker; import mlflow; "
            "from mlflow.telemetry.client import get_telemetry_client; print(get_telemetry_client())")
    # as a user's shell: MLflow turns telemetry off by itself under pytest and in CI, by these variables
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "None"


def test_the_command_skips_the_interpreters_last_collection_once_done(monkeypatch):
    import gc

    from fairsweep import cli

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))  # the real one would outlive this test
    monkeypatch.setattr(sys, "argv", ["fairsweep", "relus", "small_cnn", "--input-size", "8", "--in-channels", "1",
                                      "--json"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0 and frozen == [True]
    monkeypatch.setattr(sys, "argv", ["fairsweep", "run", "no-such-spec.yaml"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2 and frozen == [True, True]  # after a user's mistake too
