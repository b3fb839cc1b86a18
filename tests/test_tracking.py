"""The MLflow side on its own: a sweep's runs are read page by page, so none is lost past one page; what each
run holds (its source, its stages' durations, its dataset, the params that apply to it)."""

import copy
import json
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing

import pytest

from conftest import TINY, read_transaction_held
from fairsweep import __version__
from fairsweep.metrics.values import GroupMetrics, safe_key
from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import Trial, make_plan, resolve_spec
from fairsweep.sweep.records import Timing, TrialRecord, Worker
from fairsweep.tracking import PARENT_TAG, ROLE_TAG, TRIAL_TAG, SweepTracking, Tracker, curve_key
from fairsweep.tracking.content import dataset_inputs, sweep_params, trial_params
from fairsweep.tracking.source import GIT_DIRTY_TAG, source_tags
from fairsweep.tracking.stores import runs_url, ui_address


def test_child_runs_are_read_past_one_page_and_only_finished_trials_count(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "paging")
    parent = tracker.client.create_run(tracker.experiment_id, tags={ROLE_TAG: "sweep"}).info.run_id
    children = []
    for i in range(5):
        run = tracker.client.create_run(tracker.experiment_id, tags={PARENT_TAG: parent, ROLE_TAG: "trial",
                                                                     TRIAL_TAG: f"trial-{i}"})
        children.append(run.info.run_id)
        if i < 4:  # the last one is left RUNNING, as a killed driver leaves it
            tracker.client.set_terminated(run.info.run_id, "FINISHED")
    assert sorted(r.info.run_id for r in tracker.child_runs(parent, page=2)) == sorted(children)
    assert len(tracker.client.search_runs([tracker.experiment_id], f"tags.`{PARENT_TAG}` = '{parent}'",
                                          max_results=2)) == 2  # what one page would have given
    done, mine = tracker.finished_trials(parent)
    assert done == {f"trial-{i}": children[i] for i in range(4)} and mine == set(children[:4])
    assert tracker.client.get_run(children[4]).info.lifecycle_stage == "deleted"


def test_a_per_group_curve_is_logged_under_the_group_key():
    assert curve_key("multiplier/a b") == f"multiplier/{safe_key('a b')}" != curve_key("multiplier/a_b")
    assert curve_key("multiplier/a/b") == f"multiplier/{safe_key('a/b')}" and curve_key("loss") == "loss"


def test_verbose_lets_ray_forward_the_workers_output(monkeypatch):
    import logging

    from fairsweep.sweep.ray_session import VERBOSE_ENV, ray_logging

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    assert ray_logging() == {"logging_level": logging.WARNING, "log_to_driver": False}
    monkeypatch.setenv(VERBOSE_ENV, "1")
    assert ray_logging() == {"logging_level": logging.INFO, "log_to_driver": True}


def test_the_ray_token_is_made_readable_by_its_owner_only(tmp_path):
    from fairsweep.sweep.ray_session import private_token

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)  # as Ray writes it
    private_token(token)
    assert token.stat().st_mode & 0o777 == 0o600
    private_token(tmp_path / "missing")  # no token: nothing to do, no error


# --- what a sweep's runs hold --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow database for the tests below (each logs to an experiment of its own): its tables are built once."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    Tracker(uri, "setup")
    return uri


@pytest.fixture(scope="module")
def plan():
    """A tiny grid of two trials (µ 0 and 0.01) on digits; nothing is trained, the records are made up."""
    raw = copy.deepcopy(TINY)
    raw["sweep"] = {"grid": {"seed": [0], "linearize.budget": [0.05], "finetune.mu": [0.0, 0.01]}}
    return make_plan(validate_spec(raw))


def finished(trial, **changes) -> TrialRecord:
    """A record as the trial's worker writes it (its numbers made up)."""
    accuracy = GroupMetrics(0.9, {"0": 0.95, "1": 0.85}, {"0": 20, "1": 5})
    record = TrialRecord(
        trial_id=trial.id, name=trial.name, values=trial.values, spec=trial.spec.model_dump(mode="json"),
        stages={kind: stage.id for kind, stage in trial.stages.items()}, trained={k: True for k in trial.stages},
        lock_wait_s={k: 0.0 for k in trial.stages}, worker=Worker(host="here", pid=1),
        timing=Timing(started=time.time() - 60, seconds=42.0), metrics={"acc": 0.9, "worst_group_acc": 0.85},
        accuracy={"base": accuracy, "final": accuracy},
        group_sizes={"train": {"0": 80, "1": 20}, "val": {"0": 10, "1": 3}, "test": {"0": 20, "1": 5}},
        input_shape=[1, 8, 8], num_classes=10, relu_sites={}, model={})
    return record.model_copy(update=changes)


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c",
                           "commit.gpgsign=false", *args], check=True, capture_output=True, text=True).stdout.strip()


def test_every_run_of_a_sweep_names_its_spec_file_its_commit_and_the_fairsweep_version(tmp_path, mlflow_uri, plan,
                                                                                        monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    spec_file = repo / "sweep.yaml"
    spec_file.write_text("name: tiny\n")
    git(repo, "init", "-q")
    git(repo, "add", "sweep.yaml")
    git(repo, "commit", "-qm", "the spec")
    tracking = SweepTracking(mlflow_uri, "source", spec_file)
    parent, _ = tracking.open_sweep(plan.spec, len(plan.trials))
    child = tracking.log_trial(parent, plan.trials[0], finished(plan.trials[0]), tmp_path / "runs")
    for run_id in (parent, child):
        tags = tracking.tracker.client.get_run(run_id).data.tags
        commit = tags["mlflow.source.git.commit"]
        assert commit == git(repo, "rev-parse", "HEAD") and len(commit) == 40
        assert tags["fairsweep.git.dirty"] == "false" and tags["fairsweep.version"] == __version__
        assert tags["mlflow.source.name"] == str(spec_file) and tags["mlflow.source.type"] == "LOCAL"
    (repo / "untracked.txt").write_text("runs/, mlflow.db: not what ran")
    assert source_tags(spec_file)[GIT_DIRTY_TAG] == "false"
    spec_file.write_text("name: changed\n")  # a tracked file changed: the commit is not what ran
    assert source_tags(spec_file)[GIT_DIRTY_TAG] == "true"
    git(repo, "commit", "-qam", "changed")
    (repo / "new.yaml").write_text("name: new\n")  # a spec the commit does not hold
    assert source_tags(repo / "new.yaml")[GIT_DIRTY_TAG] == "true"
    outside = tmp_path / "outside.yaml"  # in no repository: no commit, the rest as ever
    assert source_tags(outside) == {"fairsweep.version": __version__, "mlflow.source.type": "LOCAL",
                                    "mlflow.source.name": str(outside)}
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert "mlflow.source.git.commit" not in source_tags(spec_file)


def test_a_trial_run_has_the_seconds_of_each_stage_it_trained(tmp_path, mlflow_uri, plan):
    tracking = SweepTracking(mlflow_uri, "stage-seconds")
    parent, _ = tracking.open_sweep(plan.spec, len(plan.trials))
    seconds = {"base": 3.5, "linearize": 12.25, "finetune": 4.0}
    first = tracking.log_trial(parent, plan.trials[0], finished(plan.trials[0], stage_seconds=seconds), tmp_path)
    reused = finished(plan.trials[1], trained={"base": False, "linearize": False, "finetune": True},
                      stage_seconds={"finetune": 4.5})
    second = tracking.log_trial(parent, plan.trials[1], reused, tmp_path)
    metrics = {run_id: {k: v for k, v in tracking.tracker.client.get_run(run_id).data.metrics.items()
                        if k.startswith("stage_seconds/")} for run_id in (first, second)}
    assert metrics[first] == {f"stage_seconds/{kind}": s for kind, s in seconds.items()}
    assert metrics[second] == {"stage_seconds/finetune": 4.5}  # the stages it reused: none of their seconds
    older = finished(plan.trials[0]).to_json()
    del older["stage_seconds"]  # a record of the same format written before them reads, without them
    assert TrialRecord.model_validate(older).stage_seconds == {}


def test_a_trial_run_has_its_splits_as_datasets_with_their_group_sizes(tmp_path, mlflow_uri, plan):
    tracking = SweepTracking(mlflow_uri, "datasets")
    parent, _ = tracking.open_sweep(plan.spec, len(plan.trials))
    runs = [tracking.log_trial(parent, trial, finished(trial), tmp_path) for trial in plan.trials]
    inputs = [tracking.tracker.client.get_run(run_id).inputs.dataset_inputs for run_id in runs]
    by_context = {i.tags[0].value: i.dataset for i in inputs[0]}
    assert sorted(by_context) == ["test", "train", "val"] and all(i.tags[0].key == "mlflow.data.context"
                                                                   for i in inputs[0])
    record = finished(plan.trials[0])
    for split, dataset in by_context.items():
        assert dataset.name == "digits" and dataset.digest.startswith(plan.trials[0].data_digest + "-")
        assert json.loads(dataset.source) == {"dataset": "digits"} and dataset.source_type == "code"  # embedded
        profile = json.loads(dataset.profile)
        assert profile["group_sizes"] == record.group_sizes[split] and profile["group"] == "class"
        assert profile["num_rows"] == sum(record.group_sizes[split].values())
    assert len({d.digest for d in by_context.values()}) == 3  # three datasets, not one seen thrice
    # the µ twin trains on the same splits: the same datasets; another seed draws other splits
    assert {(i.dataset.digest, i.tags[0].value) for i in inputs[1]} == {(d.digest, c) for c, d in by_context.items()}
    reseeded = dataset_inputs(plan.trials[0].spec.model_copy(update={"seed": 1}), plan.trials[0].data_digest,
                              record.group_sizes)
    assert not {i.dataset.digest for i in reseeded} & {d.digest for d in by_context.values()}


def test_a_file_datasets_source_names_its_root(tmp_path, monkeypatch):
    spec = validate_spec({"name": "faces", "data": {"dataset": "utkface", "root": str(tmp_path / "faces")}})
    [train] = dataset_inputs(spec, "0123456789abcdef", {"train": {"a": 3, "b": 4}})
    assert json.loads(train.dataset.source) == {"uri": str(tmp_path / "faces"), "dataset": "utkface"}
    assert train.dataset.source_type == "local"  # MLflow's own type of a local path: its UI shows the root
    monkeypatch.setenv("FAIRSWEEP_DATA", str(tmp_path / "data"))  # no data.root: the environment's
    [train] = dataset_inputs(spec.model_copy(update={"data": spec.data.model_copy(update={"root": None})}),
                             "0123456789abcdef", {"train": {"a": 3}})
    assert json.loads(train.dataset.source)["uri"] == str(tmp_path / "data")


def test_a_reader_holding_the_database_does_not_stop_a_trial_being_logged(tmp_path, plan):
    """`mlflow ui` on the sweep's database, a read transaction held open: the trial is logged at once, not
    after the reader lets go (nor failed with "database is locked" once MLflow's 20 s busy timeout passed)."""
    tracking = SweepTracking(f"sqlite:///{tmp_path}/mlflow.db", "reader")
    parent, _ = tracking.open_sweep(plan.spec, len(plan.trials))
    with read_transaction_held(tmp_path / "mlflow.db") as held:
        run_id = tracking.log_trial(parent, plan.trials[0], finished(plan.trials[0]), tmp_path)
        assert held()  # logged while the reader held its transaction
    assert tracking.tracker.client.get_run(run_id).info.status == "FINISHED"
    # once the sweep ends, the database file alone holds it all (as a copy of it without its -wal file would)
    tracking.finish_sweep(parent, "", {"trials_finished": 1}, "FINISHED")
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "mlflow.db", tmp_path / "copy" / "mlflow.db")
    with closing(sqlite3.connect(tmp_path / "copy" / "mlflow.db")) as copy_db:
        statuses = dict(copy_db.execute("SELECT run_uuid, status FROM runs").fetchall())
    assert statuses == {parent: "FINISHED", run_id: "FINISHED"}


def test_a_trial_run_is_named_by_what_varies_most_and_has_only_the_params_that_apply(tmp_path, mlflow_uri, plan):
    trial = plan.trials[1]
    assert trial.name == "seed=0,budget=0.05,mu=0.01"  # progress lines, tables: the grid's order
    assert trial.run_name == "mu=0.01,budget=0.05,seed=0"  # the runs list: µ, the budget, the seed last
    tracking = SweepTracking(mlflow_uri, "params")
    parent, _ = tracking.open_sweep(plan.spec, len(plan.trials))
    run = tracking.tracker.client.get_run(tracking.log_trial(parent, trial, finished(trial), tmp_path))
    assert run.info.run_name == "mu=0.01,budget=0.05,seed=0"
    params = run.data.params
    assert {"seed", "linearize.budget", "finetune.mu", "linearize.snl.lambda_init", "data.dataset"} <= set(params)
    assert params["finetune.mu"] == "0.01" and params["linearize.method"] == "snl"
    unread = [k for k in params if k.startswith(("linearize.deepreduce.", "linearize.random", "data.age_bins",
                                                 "data.image_size", "data.csv.", "data.root", "sweep."))]
    assert unread == [] and "null" not in params.values()
    sweep = tracking.tracker.client.get_run(parent).data.params  # the grid's values, not the spec's overridden one
    assert sweep["sweep.grid.finetune.mu"] == "[0.0, 0.01]" and "finetune.mu" not in sweep and "seed" not in sweep
    assert "linearize.snl.lr" in sweep and not any(k.startswith("linearize.deepreduce.") for k in sweep)


def test_params_that_apply_follow_the_method_and_the_dataset():
    def trial(raw, values=None):
        spec = resolve_spec(validate_spec({"name": "t", **raw}).with_values(values or {}))
        return Trial(spec, values or {}, "0123456789abcdef")

    deepreduce = trial_params(trial({"linearize": {"method": "deepreduce"}}), {"width_factor": 0.5})
    assert "linearize.deepreduce.width_factors" in deepreduce and deepreduce["linearize.selected.width_factor"] == 0.5
    assert not any(k.startswith(("linearize.snl.", "linearize.random")) for k in deepreduce)
    # no finetune stage: DeepReDuce's training reads µ and the mitigation, no other finetune key
    assert sorted(k for k in deepreduce if k.startswith("finetune.")) == ["finetune.mitigation", "finetune.mu"]
    chained = trial_params(trial({"linearize": {"method": "deepreduce", "deepreduce": {"finetune": True}}}), {})
    assert "finetune.epochs" in chained
    faces = trial_params(trial({"data": {"dataset": "utkface", "root": "/data/faces"}}), {})
    assert faces["data.age_bins"] == "[2, 13, 18, 65]" and faces["data.image_size"] == 32
    assert faces["data.root"] == "/data/faces" and not any(k.startswith("data.csv.") for k in faces)
    varied = trial_params(trial({}, {"data.imbalance": None, "seed": 1, "finetune.mu": 0}), {})
    assert varied["data.imbalance"] == "null" and varied["seed"] == 1  # a varied value, whatever it is
    assert repr(varied["finetune.mu"]) == "0.0"  # as the spec types it: `--set finetune.mu=[0,0.01]` logs 0.0
    both = sweep_params(validate_spec({"name": "t", "sweep": {"grid": {"linearize.method": ["snl", "deepreduce"]}}}), 2)
    assert "linearize.snl.lr" in both and "linearize.deepreduce.lr" in both and "linearize.method" not in both
    assert not any(k.startswith("linearize.random") for k in both)


def test_the_link_to_a_sweeps_runs_opens_them_with_the_columns_that_matter(tmp_path, mlflow_uri, plan):
    tracking = SweepTracking(mlflow_uri, "link")
    parent, _ = tracking.open_sweep(plan.spec, len(plan.trials))
    experiment = tracking.tracker.experiment_id
    assert runs_url(mlflow_uri, "link", parent) == (f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?"
                                                     f"workflowType=machine_learning&viewStateShareKey={parent}")
    # the UI opens the view the experiment's tag holds: the sweep's trial runs, the varied keys and metrics shown
    view = json.loads(tracking.tracker.client.get_experiment(experiment).tags[f"mlflow.sharedViewState.{parent}"])
    assert view["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent}'"
    assert {"params.`linearize.budget`", "params.`finetune.mu`", "params.`seed`", "metrics.`acc`",
            "metrics.`worst_group_acc`", "metrics.`drop_gap_pct`"} <= set(view["selectedColumns"])
    assert view["orderByKey"] == "tags.`mlflow.runName`"  # µ first, then the budget; listed, not under the sweep
    assert ui_address("http://mlflow.example.org:8080/") == "http://mlflow.example.org:8080"  # a server's own
    assert runs_url(mlflow_uri, "no-such-experiment", parent) is None


def test_a_later_sweep_includes_the_trials_logged_before_instead_of_logging_them_again(tmp_path, mlflow_uri, plan):
    first = SweepTracking(mlflow_uri, "include")
    parent_a, logged = first.open_sweep(plan.spec, 1)
    assert logged == {}
    run = first.log_trial(parent_a, plan.trials[0], finished(plan.trials[0]), tmp_path)
    first.finish_sweep(parent_a, "", {"trials_finished": 1}, "FINISHED")
    # the same spec with a wider µ grid: another sweep run, named by its override
    wider = plan.spec.model_copy(update={"sweep": plan.spec.sweep.model_copy(
        update={"grid": {**plan.spec.sweep.grid, "finetune.mu": [0.0, 0.01, 0.02]}})})
    second = SweepTracking(mlflow_uri, "include", overrides=["finetune.mu=[0,0.01,0.02]"])
    parent_b, logged = second.open_sweep(wider, 3)
    assert parent_b != parent_a and logged == {plan.trials[0].id: run}  # found, whichever sweep logged it
    tracker = second.tracker
    assert tracker.client.get_run(parent_b).info.run_name == "tiny finetune.mu=[0,0.01,0.02]"
    second.include_trial(parent_b, run)
    second.include_trial(parent_b, run)  # once is enough: a second call sets nothing
    own = second.log_trial(parent_b, plan.trials[1], finished(plan.trials[1]), tmp_path)
    assert sorted(r["run_id"] for r in tracker.trial_runs(parent_b)) == sorted([run, own])
    assert [r["run_id"] for r in tracker.trial_runs(parent_a)] == [run]
    tags = tracker.client.get_run(run).data.tags
    assert tags[f"fairsweep.sweep.{parent_a}"] == tags[f"fairsweep.sweep.{parent_b}"] == "1"
    assert tags[PARENT_TAG] == parent_a  # the UI still folds it under the sweep that logged it
    trial_runs = tracker.client.search_runs([tracker.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    assert len(trial_runs) == 2  # no copy
    # resumed, the second sweep finds both as its own and deletes neither
    again = SweepTracking(mlflow_uri, "include", overrides=["finetune.mu=[0,0.01,0.02]"])
    assert again.open_sweep(wider, 3) == (parent_b, {plan.trials[0].id: run, plan.trials[1].id: own})
    assert again.mine == {run, own}


def test_a_resumed_sweep_adds_its_time_and_stages_to_the_first_runs(mlflow_uri, plan):
    tracking = SweepTracking(mlflow_uri, "resumed-summary")
    parent, _ = tracking.open_sweep(plan.spec, 2)
    tracking.finish_sweep(parent, "", {"trials_finished": 1, "wall_seconds": 100.0, "stages_trained/base": 1}, "KILLED")
    again = SweepTracking(mlflow_uri, "resumed-summary")
    assert again.open_sweep(plan.spec, 2)[0] == parent
    again.finish_sweep(parent, "", {"trials_finished": 2, "wall_seconds": 5.0, "stages_trained/base": 0}, "FINISHED")
    client = again.tracker.client
    metrics = client.get_run(parent).data.metrics
    assert metrics["wall_seconds"] == 105.0 and metrics["stages_trained/base"] == 1  # the first run's kept
    assert metrics["trials_finished"] == 2 and metrics["invocations"] == 2 and metrics["invocation_seconds"] == 5.0
    assert [m.value for m in client.get_metric_history(parent, "invocation_seconds")] == [100.0, 5.0]


def test_a_sweep_run_is_named_by_its_spec_and_overrides_cut_to_a_readable_length():
    from fairsweep.tracking.tracker import RUN_NAME_CHARS, sweep_run_name

    assert sweep_run_name("mu_ablation", []) == "mu_ablation"
    assert sweep_run_name("mu_ablation", ["finetune.mu=[0,0.01]", "seed=[0]"]) == "mu_ablation finetune.mu=[0,0.01] seed=[0]"
    # a key set twice: its last value, where it was last set
    assert sweep_run_name("s", ["finetune.mu=[0]", "seed=[0]", "finetune.mu=[0,1]"]) == "s seed=[0] finetune.mu=[0,1]"
    # too long: the earliest overrides give way to the latest
    many = [f"data.key{i}={'x' * 20}" for i in range(10)]
    name = sweep_run_name("s", many)
    assert len(name) <= RUN_NAME_CHARS and name.startswith("s … ") and name.endswith(many[-1])
    long = sweep_run_name("s", [f"data.root=/{'x' * 200}"])
    assert len(long) == RUN_NAME_CHARS and long.endswith("…")
