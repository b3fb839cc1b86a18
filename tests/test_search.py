"""Optuna search: the spec's `sweep.search` checked before any work; the searcher driving the study
(seed means, n_trials from the stored study, a killed driver's trial taken over); a tiny search end
to end through `fairsweep run` and its resume; `fairsweep pareto` on it and on a grid sweep."""

import copy
import csv
import io
import json
import math
import re
import shutil

import mlflow
import numpy as np
import optuna
import pytest
import yaml
from ray.tune.search import Searcher
from typer.testing import CliRunner

from conftest import TINY, fairsweep_cli, read_transaction_held
from fairsweep.cli import app
from fairsweep.errors import UserError
from fairsweep.files import sqlite_checkpoint
from fairsweep.spec import validate_spec
from fairsweep.sweep.pareto import non_dominated, to_minimize
from fairsweep.data import ContentDigests
from fairsweep.sweep.plan import Trial, resolve_spec
from fairsweep.sweep.records import read_trial_record
from fairsweep.sweep.search import (StudySearcher, distribution, open_study, study_database, study_name,
                                    study_url)
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial

OBJECTIVES = {"acc": "max", "drop_gap_pct": "min", "relu_count": "min"}
SEARCH = {
    **copy.deepcopy(TINY),
    "name": "tiny_search",
    "diagnostics": {"hessian": False, "bound": False},
    "tracking": {"log_models": False},
    "sweep": {"search": {
        "space": {"linearize.budget": {"type": "float", "low": 0.04, "high": 0.2, "log": True},
                  "finetune.mu": {"type": "categorical", "choices": [0.0, 0.01]}},
        "objectives": OBJECTIVES, "n_trials": 3, "sampler": "random", "sampler_seed": 0},
        "max_concurrent_trials": 2},
}


def search_raw(**search):
    raw = copy.deepcopy(SEARCH)
    raw["sweep"]["search"].update(search)
    return raw


def problems(raw) -> str:
    with pytest.raises(UserError) as info:
        validate_spec(raw)
    return "\n".join(info.value.problems)


@pytest.mark.parametrize("change,expect", [
    ({"space": {"linearize.budgte": {"type": "float", "low": 0.01, "high": 0.1}}},
     "unknown key `sweep.search.space.linearize.budgte` (did you mean `budget`?)"),
    ({"space": {"finetune.mu": {"type": "float", "low": 0.1, "high": 0.1}}},
     "`sweep.search.space.finetune.mu`: low must be below high"),
    ({"space": {"finetune.mu": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
     "`sweep.search.space.finetune.mu`: a log-uniform parameter (log: true) needs low > 0"),
    ({"space": {"finetune.mu": {"type": "categorical", "choices": [0.0, -1.0]}}},
     "`sweep.search.space.finetune.mu` value -1.0: input should be greater than or equal to 0"),
    ({"space": {"seed": {"type": "int", "low": 0, "high": 3}}}, "seeds are not searched"),
    ({"space": {"linearize.budget": {"type": "float", "low": 100, "high": 2000}}},
     "100.0 reads as a fraction of the ReLUs, which is below 1, or as a count of 100 ReLUs"),  # search counts as int
    ({"objectives": {"acc": "max", "drop_gap": "min"}},
     "unknown objective metric `drop_gap` (did you mean `drop_gap_pct`?)"),
    ({"sampler": "cmaes"}, "`sweep.search.sampler`: input should be 'tpe', 'nsga2' or 'random'"),
])
def test_bad_search_specs_name_the_key_and_the_fix(change, expect):
    assert expect in problems(search_raw(**change))


def test_grid_and_search_together_is_an_error():
    raw = search_raw()
    raw["sweep"]["grid"] = {"finetune.mu": [0.0, 0.01]}
    assert "either a `grid` (every combination of values) or a `search` (Optuna), not both" in problems(raw)


def test_grid_specs_keep_their_content_hash():
    # the hash names a grid sweep's MLflow run: adding `sweep.search` must not change it for grid specs
    spec = validate_spec({**copy.deepcopy(TINY), "sweep": {"grid": {"finetune.mu": [0.0, 0.01]}}})
    # as computed before search existed, but for what changed since: linearize.lambda_warmup (which changes
    # what SNL computes), model.stem_relu, TINY's lambda_init (3e-2, was 1e-2; "380b4eb6898132bb" before them),
    # then the spec's own layout (SNL's options under linearize.snl, data defaults resolved by the pre-flight;
    # "b2aaa1504584f468" before it)
    assert spec.content_hash() == "aee99acb5965fafb"
    # raising n_trials continues the same search
    assert validate_spec(search_raw(n_trials=9)).content_hash() == validate_spec(search_raw()).content_hash()


def read_record(storage):
    return lambda trial_id: read_trial_record(storage, trial_id)


def drive(searcher, store):
    """What Ray Tune does with the searcher, one trial at a time, in this process."""
    configs = []
    while (config := searcher.suggest(f"tune{len(configs)}")) not in (Searcher.FINISHED, None):
        values = config["values"]
        trial = Trial(resolve_spec(searcher.spec.with_values(values)), values, config["data_digest"])
        assert trial.id == config["trial_id"]
        run_trial(trial, store)
        searcher.on_trial_complete(f"tune{len(configs)}")
        configs.append(config)
    assert config == Searcher.FINISHED
    return configs


def test_searcher_takes_over_a_killed_drivers_trial_and_tells_seed_means(tmp_path):
    spec = validate_spec(search_raw(n_trials=2, seeds_per_trial=2))
    study = open_study(spec, tmp_path)
    stale = study.ask({k: distribution(p) for k, p in spec.sweep.search.space.items()})  # then the driver died
    read = read_record(tmp_path)
    registered = []
    searcher = StudySearcher(open_study(spec, tmp_path), spec, ContentDigests(), registered.append,
                             lambda t: read(t.id), read)
    assert searcher.total_trials == 4 and searcher.to_ask == 1  # n_trials counts the stale trial
    configs = drive(searcher, StageStore(tmp_path))
    assert [c["values"] for c in configs[:2]] == [{**stale.params, "seed": 0}, {**stale.params, "seed": 1}]
    assert len(configs) == 4 and [t.id for t in registered] == [c["trial_id"] for c in configs]
    trials = optuna.load_study(study_name=study_name(spec), storage=study_url(tmp_path)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial, seeds in zip(trials, (configs[:2], configs[2:])):
        records = [read(c["trial_id"]) for c in seeds]
        assert trial.values == pytest.approx([np.mean([r.metrics[m] for r in records]) for m in OBJECTIVES])
        assert trial.user_attrs.get("fairsweep_trial_ids", [c["trial_id"] for c in seeds]) == [c["trial_id"]
                                                                                            for c in seeds]
    # the study is full: a new searcher asks nothing, and reuses every finished seed
    again = StudySearcher(open_study(spec, tmp_path), spec, ContentDigests(), lambda t: None, lambda t: read(t.id),
                          read)
    assert again.to_ask == 0 and not again.has_work and again.suggest("x") == Searcher.FINISHED


def test_a_reader_holding_the_study_does_not_stop_the_search(tmp_path):
    """`optuna-dashboard` on the study with a read transaction held open: the driver's ask and tell go on."""
    study = open_study(validate_spec(SEARCH), tmp_path)
    with read_transaction_held(tmp_path / "optuna.db") as held:
        trial = study.ask({"finetune.mu": distribution(validate_spec(SEARCH).sweep.search.space["finetune.mu"])})
        study.tell(trial, [0.9, 1.0, 100.0])
        assert held()
    assert len(open_study(validate_spec(SEARCH), tmp_path).get_trials(deepcopy=False)) == 1
    sqlite_checkpoint(study_database(tmp_path))  # as the driver does once the search is done: the file alone is whole
    (tmp_path / "copy").mkdir()
    shutil.copy(study_database(tmp_path), tmp_path / "copy" / "optuna.db")
    assert len(optuna.load_study(study_name=study_name(validate_spec(SEARCH)),
                                 storage=study_url(tmp_path / "copy")).get_trials(deepcopy=False)) == 1


def test_a_seeded_sampler_asks_the_same_points(tmp_path):
    spec = validate_spec(search_raw(sampler="tpe"))
    first = [open_study(spec, tmp_path / str(i)).ask({k: distribution(p) for k, p in
                                                      spec.sweep.search.space.items()}).params for i in range(2)]
    assert first[0] == first[1]


# ---------------------------------------------------------------------------------------------
# end to end: `fairsweep run` of a tiny search, its resume, `fairsweep pareto`


def fairsweep_here(cwd, monkeypatch, *args):
    """`fairsweep ARGS` in this process (no start-up cost), in `cwd`; `.returncode` as a process's."""
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, list(map(str, args)))
    result.returncode = result.exit_code
    return result


def stage_dirs(tmp_path):
    return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "stages").glob("*/*")}


def trial_runs(tmp_path, experiment):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return mlflow.search_runs(experiment_names=[experiment])


@pytest.fixture(scope="module")
def searched(tmp_path_factory, local_ray):
    tmp_path = tmp_path_factory.mktemp("search")
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(SEARCH))
    first = fairsweep_cli("run", "search.yaml", "--storage", "runs", cwd=tmp_path)
    after_first = {"runs": trial_runs(tmp_path, "tiny_search"), "stages": stage_dirs(tmp_path),
                   "study": load_study(tmp_path).trials}
    same = fairsweep_cli("run", "search.yaml", "--storage", "runs", cwd=tmp_path)
    more = fairsweep_cli("run", "search.yaml", "--storage", "runs", "--set", "sweep.search.n_trials=4", cwd=tmp_path)
    return tmp_path, first, after_first, same, more


def load_study(tmp_path):
    return optuna.load_study(study_name=study_name(validate_spec(SEARCH)), storage=study_url(tmp_path / "runs"))


def test_search_runs_its_trials_and_fills_the_study(searched):
    tmp_path, first, after_first, _, _ = searched
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3/3 trials finished (0 from earlier runs)" in first.stdout
    assert "base 1/1, linearize 3/3, finetune 3/3" in first.stdout
    trials, runs = after_first["study"], after_first["runs"]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    children = runs[runs["tags.fairsweep.role"] == "trial"]
    parents = runs[runs["tags.fairsweep.role"] == "sweep"]
    assert len(parents) == 1 and len(children) == 3 and (children["status"] == "FINISHED").all()
    for trial in trials:  # one seed per trial: the objectives are that run's metrics
        row = children[children["params.linearize.budget"] == str(trial.params["linearize.budget"])]
        assert len(row) == 1 and row["params.finetune.mu"].iloc[0] == str(trial.params["finetune.mu"])
        assert trial.values == pytest.approx([row[f"metrics.{m}"].iloc[0] for m in OBJECTIVES])


def test_rerunning_the_search_continues_the_study(searched):
    tmp_path, _, after_first, same, more = searched
    stages = after_first["stages"]
    assert same.returncode == 0, same.stdout + same.stderr
    assert "3/3 trials finished (3 from earlier runs)" in same.stdout
    assert "base 0/1, linearize 0/3, finetune 0/3" in same.stdout
    assert more.returncode == 0, more.stdout + more.stderr
    assert "4/4 trials finished (3 from earlier runs)" in more.stdout
    assert "base 0/1, linearize 1/4, finetune 1/4" in more.stdout
    after = stage_dirs(tmp_path)
    assert {k: v for k, v in after.items() if k in stages} == stages  # nothing trained again
    assert [t.number for t in load_study(tmp_path).trials] == [0, 1, 2, 3]
    runs = trial_runs(tmp_path, "tiny_search")
    assert (runs["tags.fairsweep.role"] == "sweep").sum() == 1  # the same sweep, continued
    children = runs[runs["tags.fairsweep.role"] == "trial"]
    assert len(children) == 4 and children["tags.fairsweep.trial_id"].nunique() == 4


def test_pareto_of_the_search(searched, monkeypatch):
    tmp_path = searched[0]
    result = fairsweep_here(tmp_path, monkeypatch, "pareto", "search.yaml", "--plot", "front.png")
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "tiny_search: Pareto front" in out and "of 4 configurations" in out and "hypervolume" in out
    assert (tmp_path / "front.png").stat().st_size > 0


GRID = {**copy.deepcopy(SEARCH), "name": "tiny_grid",
        "sweep": {"grid": {"seed": [0, 1], "finetune.mu": [0.0, 0.01]}}}


@pytest.fixture(scope="module")
def grid_swept(searched):
    tmp_path = searched[0]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    result = fairsweep_cli("run", "grid.yaml", "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path


def test_pareto_of_a_grid_sweep_averages_seeds(grid_swept, monkeypatch):
    tmp_path = grid_swept
    result = fairsweep_here(tmp_path, monkeypatch, "pareto", "grid.yaml", "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    front = json.loads(result.stdout)
    assert front["objectives"] == OBJECTIVES and front["configurations"] == 2
    # the oracle: seed means per µ from MLflow, filtered by brute force
    runs = trial_runs(tmp_path, "tiny_grid")
    children = runs[runs["tags.fairsweep.role"] == "trial"]
    means = children.groupby("params.finetune.mu")[[f"metrics.{m}" for m in OBJECTIVES]].mean()
    points = to_minimize(means.to_numpy(), list(OBJECTIVES.values()))
    expected = sorted(float(mu) for mu, keep in zip(means.index, non_dominated(points)) if keep)
    assert sorted(row["finetune.mu"] for row in front["front"]) == expected
    for row in front["front"]:
        assert row["seeds"] == 2 and len(row["run_ids"]) == 2
        assert set(row["run_ids"]) <= set(children["run_id"])
        assert row["acc"] == pytest.approx(means.loc[str(row["finetune.mu"]), "metrics.acc"])
    assert math.isfinite(front["hypervolume"]) and front["hypervolume"] >= 0
    assert (tmp_path / "tiny_grid-pareto.png").is_file()
    parent = runs[runs["tags.fairsweep.role"] == "sweep"].iloc[0]
    client = mlflow.MlflowClient()
    assert client.get_run(parent["run_id"]).data.metrics["pareto_hypervolume"] == pytest.approx(front["hypervolume"])
    assert {a.path for a in client.list_artifacts(parent["run_id"], "pareto")} >= {
        "pareto/front.csv", "pareto/front.json", "pareto/tiny_grid-pareto.png"}


def test_pareto_by_experiment_name_as_csv_and_table(grid_swept, monkeypatch):
    tmp_path = grid_swept
    result = fairsweep_here(tmp_path, monkeypatch, "pareto", "tiny_grid", "--format", "csv", "--objective", "acc:max",
                       "--objective", "relu_count:min", "--reference", "0,1000")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows and set(rows[0]) == {"point", "finetune.mu", "acc", "relu_count", "seeds", "run_ids"}
    assert "hypervolume" in result.stderr and "reference acc=0, relu_count=1000" in result.stderr
    table = fairsweep_here(tmp_path, monkeypatch, "pareto", "grid.yaml")
    assert table.returncode == 0 and "MLflow runs" in table.stdout and "hypervolume" in table.stdout
    assert re.search(r"Pareto front, \d+ points? \(\d+ of 2 configurations", table.stdout) and "point" in table.stdout


@pytest.mark.parametrize("args,expect", [
    (["tiny_grid", "--objective", "accc:max", "--objective", "relu_count:min"], "did you mean `acc`?"),
    (["tiny_gird"], "unknown MLflow experiment `tiny_gird` (did you mean `tiny_grid`?)"),
    (["tiny_grid", "--x", "param_dist"], "`--x`: unknown objective `param_dist`"),
])
def test_pareto_bad_input_exits_2(grid_swept, monkeypatch, args, expect):
    result = fairsweep_here(grid_swept, monkeypatch, "pareto", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expect in " ".join(result.stderr.split())


def test_run_with_a_bad_search_exits_2_before_any_work(tmp_path, monkeypatch):
    raw = search_raw(objectives={"accuracy": "max", "relu_count": "min"})
    raw["sweep"]["grid"] = {"finetune.mu": [0.0]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    result = fairsweep_here(tmp_path, monkeypatch, "run", "bad.yaml", "--storage", "runs")
    assert result.returncode == 2, result.stdout + result.stderr
    text = " ".join(result.stderr.split())
    assert "unknown objective metric `accuracy`" in text and "not both" in text and "Traceback" not in text
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_seed_that_fails_fails_its_optuna_trial_and_the_next_is_asked(tmp_path):
    spec = validate_spec(search_raw(n_trials=1))
    read = read_record(tmp_path)
    searcher = StudySearcher(open_study(spec, tmp_path), spec, ContentDigests(), lambda t: None,
                             lambda t: read(t.id), read)
    assert searcher.suggest("tune0") not in (Searcher.FINISHED, None)
    searcher.on_trial_complete("tune0", error=True)  # what Tune reports of a trial that failed for good
    assert searcher.suggest("tune1") == Searcher.FINISHED  # this run asked its one trial
    trials = optuna.load_study(study_name=study_name(spec), storage=study_url(tmp_path)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
    # a failed trial does not count: re-running asks for a new one
    assert StudySearcher(open_study(spec, tmp_path), spec, ContentDigests(), lambda t: None, lambda t: read(t.id),
                         read).to_ask == 1


# --- adaptive seeds ---------------------------------------------------------------------------------

def test_could_reach_front_against_constructed_objectives():
    from fairsweep.sweep.search import could_reach_front

    higher = [True, False]  # acc: max, drop_gap_pct: min
    strong = [[0.90, 10.0], [0.91, 11.0], [0.89, 9.0]]  # seed std 0.01 and 1
    assert not could_reach_front([[0.50, 40.0]], [strong], higher)  # far behind on both, beyond any noise
    assert could_reach_front([[0.885, 11.5]], [strong], higher)  # behind, but within two standard errors
    assert could_reach_front([[0.50, 5.0]], [strong], higher)  # worse accuracy, a smaller gap: a trade-off
    assert could_reach_front([[0.1, 90.0]], [[[0.9, 1.0]]], higher)  # no spread known yet: cannot tell
    assert not could_reach_front([[0.80, 20.0], [0.81, 21.0], [0.79, 19.0]], [strong], higher)


def test_adaptive_seeds_stop_a_hopeless_configuration_at_one_and_give_a_near_one_all(tmp_path):
    """Three configurations of constructed objectives: two near each other (all 3 seeds each), then one
    far behind (1 seed); the study is told the seed means and their count; a resumed search reruns nothing."""
    from types import SimpleNamespace

    spec = validate_spec(search_raw(n_trials=3, seeds_per_trial=3, seeds="adaptive", sampler="random"))
    quality = {}  # Optuna's point -> (acc, drop_gap_pct) around which its seeds fall, by the order asked
    centres = [(0.90, 10.0), (0.89, 10.5), (0.40, 60.0)]
    records = {}

    def record(trial):
        return records.get(trial.id)

    registered = []
    searcher = StudySearcher(open_study(spec, tmp_path), spec, ContentDigests(), registered.append, record,
                             lambda trial_id: records.get(trial_id))
    handed = []
    while (config := searcher.suggest(f"tune{len(handed)}")) not in (Searcher.FINISHED, None):
        point = tuple(sorted((k, v) for k, v in config["values"].items() if k != "seed"))
        acc, gap = centres[quality.setdefault(point, len(quality))]
        seed = config["values"]["seed"]
        noise = (-1, 1, 0)[seed % 3]
        records[config["trial_id"]] = SimpleNamespace(metrics={"acc": acc + 0.01 * noise, "drop_gap_pct": gap + noise,
                                                               "relu_count": 50.0})
        searcher.on_trial_complete(f"tune{len(handed)}")
        handed.append(config)
    assert config == Searcher.FINISHED
    seeds_run = {}
    for config in handed:
        point = tuple(sorted((k, v) for k, v in config["values"].items() if k != "seed"))
        seeds_run[quality[point]] = seeds_run.get(quality[point], 0) + 1
    assert seeds_run == {0: 3, 1: 3, 2: 1}
    trials = optuna.load_study(study_name=study_name(spec), storage=study_url(tmp_path)).trials
    assert [t.user_attrs["seeds"] for t in trials] == [3, 3, 1]
    assert trials[2].values == pytest.approx([0.40 - 0.01, 60.0 - 1, 50.0])  # its one seed (0)
    assert trials[0].values == pytest.approx([0.90, 10.0, 50.0])  # the mean of its three
    # resumed with one more trial: the finished ones' seeds are adopted as they ran, none is handed out again
    more = validate_spec(search_raw(n_trials=4, seeds_per_trial=3, seeds="adaptive", sampler="random"))
    again_registered = []
    again = StudySearcher(open_study(more, tmp_path), more, ContentDigests(), again_registered.append, record,
                          lambda trial_id: records.get(trial_id))
    again.adopt_finished()
    assert [t.id for t in again_registered] == [c["trial_id"] for c in handed] and again.to_ask == 1
    first = again.suggest("more0")
    assert first["trial_id"] not in {c["trial_id"] for c in handed}


def test_a_grid_goes_to_tune_in_runs_of_at_most_per_run_trials():
    """Tune holds every trial of a Tuner run until it ends: a long grid is several runs, in the plan's order."""
    from fairsweep.sweep.plan import make_plan
    from fairsweep.sweep.tune_backend import PlanSearcher

    grid = {"seed": [0, 1], "finetune.mu": [0.0, 0.01, 0.02]}
    trials = make_plan(validate_spec({**copy.deepcopy(TINY), "sweep": {"grid": grid}})).trials
    searcher = PlanSearcher(trials, per_run=4)
    runs = []
    while True:
        handed = []
        while (config := searcher.suggest(f"t{len(handed)}")) != Searcher.FINISHED:
            handed.append(config["trial_id"])
        runs.append(handed)
        if not searcher.another_run():
            break
    assert [len(run) for run in runs] == [4, 2]
    assert [t for run in runs for t in run] == [t.id for t in trials]
    halted = PlanSearcher(trials, per_run=4)
    halted.suggest("a")
    halted.halt()
    assert halted.suggest("b") == Searcher.FINISHED and not halted.another_run()  # an interrupt: no next run


def test_an_interrupted_searcher_hands_out_nothing_more(tmp_path):
    """The first Ctrl-C halts the searcher at once: Tune asks it again as a trial ends, before its stopper."""
    from fairsweep.sweep.plan import make_plan
    from fairsweep.sweep.tune_backend import PlanSearcher

    grid = validate_spec({**copy.deepcopy(TINY), "sweep": {"grid": {"finetune.mu": [0.0, 0.01, 0.02]}}})
    plan_searcher = PlanSearcher(make_plan(grid).trials)
    assert plan_searcher.suggest("a") not in (Searcher.FINISHED, None)
    plan_searcher.halt()
    assert plan_searcher.suggest("b") == Searcher.FINISHED
    spec = validate_spec(search_raw(n_trials=3))
    read = read_record(tmp_path)
    study = StudySearcher(open_study(spec, tmp_path), spec, ContentDigests(), lambda t: None, lambda t: read(t.id), read)
    study.halt()
    assert study.suggest("c") == Searcher.FINISHED and study.to_ask == 3  # nothing asked: the next run asks them
