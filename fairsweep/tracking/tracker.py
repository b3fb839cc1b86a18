"""`Tracker`: the one MLflow client of a sweep's experiment, its parent run and its trial runs."""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fairsweep import __version__
from fairsweep.files import sqlite_checkpoint, sqlite_wal
from fairsweep.sweep.records import TrialRecord
from fairsweep.metrics.values import group_size_metrics
from fairsweep.tracking.content import dataset_inputs, sweep_params, trial_params
from fairsweep.tracking.logged import StageModels
from fairsweep.tracking.source import VERSION_TAG
from fairsweep.tracking.stores import absolute_uri, embedded_database, view_state_tag

ROLE_TAG = "fairsweep.role"
SPEC_HASH_TAG = "fairsweep.spec_hash"
TRIAL_TAG = "fairsweep.trial_id"
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "fairsweep.sweep."  # + a sweep run's id: on each trial run that sweep includes (its own, others')
RUN_NAME_CHARS = 120  # a sweep run's name: its spec's name and overrides, cut to this
# a sweep run's summary metrics that add up over its invocations (the first run's time and stages are kept)
CUMULATIVE = ("wall_seconds", "lock_wait_seconds", "stages_trained/")

if TYPE_CHECKING:
    from torch import nn

    from fairsweep.sweep.plan import Trial  # the plan imports the data and model registries, hence torch

RUNS_PAGE = 1000  # runs per MLflow search (a server caps a page; more are fetched page by page)


@contextmanager
def gc_paused():
    """Python's cyclic garbage collector off meanwhile. MLflow's SQL store builds an object for each param,
    metric and tag of every run it reads, about 200,000 for 2,000 trials, and each collection the allocations
    set off walks all of them again: reading those runs took 12.9 s with it and 4.7 s without (measured on
    2 cores, 2026-12-02). The objects are freed by reference counting either way."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Tracker:
    def __init__(self, uri: str, experiment: str):
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        from fairsweep.sweep.ray_session import verbose

        if not verbose():
            # MLflow says it found no environment variables used by each model it logs, and so on
            logging.getLogger("mlflow.models.model").setLevel(logging.WARNING)
            # Creating or upgrading the embedded database's tables is routine, not news for the user
            for name in ("mlflow.store.db.utils", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model read
        uri = absolute_uri(uri)
        if (database := embedded_database(uri)) is not None:  # before MLflow opens it
            sqlite_wal(database)  # `mlflow ui` reading it while a sweep runs never stops the sweep's logging
        mlflow.set_tracking_uri(uri)
        self.uri = uri
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            self.experiment_id = self.client.create_experiment(experiment)
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        self.models = StageModels(self.client, self.experiment_id)

    # --- the sweep's parent run -------------------------------------------------------------

    def find_sweep_run(self, spec) -> str | None:
        """The parent run a previous run of this spec made, if any."""
        return self.latest_sweep_run(f" and tags.`{SPEC_HASH_TAG}` = '{spec.content_hash()}'")

    def latest_sweep_run(self, condition: str = "") -> str | None:
        """The parent run of the experiment's latest sweep (meeting `condition`, a filter clause), if any."""
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'{condition}",
                                        max_results=1, order_by=["attributes.start_time DESC"])
        return found[0].info.run_id if found else None

    def sweep_spec(self, run_id: str) -> dict:
        """The spec a sweep run was started with, as logged (`spec.json`)."""
        import os

        import mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/spec.json")

    def sweep_run(self, spec, num_trials: int, source: dict[str, str] | None = None, overrides: list[str] = ()) -> str:
        """The parent run of this spec: the one a previous run of the same spec made, or a new one, named by
        the spec and the `--set` overrides that tell it apart (`sweep_run_name`). Its `source` tags
        (`source.source_tags`) are this invocation's."""
        spec_hash = spec.content_hash()
        run_id = self.find_sweep_run(spec)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            for key, value in (source or {}).items():
                self.client.set_tag(run_id, key, value)
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=sweep_run_name(spec.name, overrides), tags={
                ROLE_TAG: "sweep", SPEC_HASH_TAG: spec_hash, VERSION_TAG: __version__, **(source or {})}).info.run_id
            self._log_params(run_id, sweep_params(spec, num_trials))
            self.client.log_dict(run_id, spec.model_dump(mode="json"), "spec.json")
        self.client.set_experiment_tag(self.experiment_id, *view_state_tag(run_id, spec.sweep.varied_keys))
        return run_id

    def finish_sweep(self, run_id: str, table_csv: str, summary: dict[str, float], status: str) -> None:
        from mlflow.entities import Metric

        if table_csv:
            self.client.log_text(run_id, table_csv, "results.csv")
        if summary:
            have = self.client.get_run(run_id).data.metrics
            step = int(have.get("invocations", 0))  # one step per invocation that finished: its history
            totals = {k: float(v) + (have.get(k, 0.0) if k.startswith(CUMULATIVE) else 0.0) for k, v in summary.items()}
            totals.update(invocations=step + 1, invocation_seconds=float(summary.get("wall_seconds", math.nan)))
            now = _now_ms()
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in totals.items()])
        self.client.set_terminated(run_id, status=status)
        if (database := embedded_database(self.uri)) is not None:
            sqlite_checkpoint(database)  # mlflow.db whole on its own, for a copy of it

    # --- trials ---------------------------------------------------------------------------

    def finished_trials(self, parent_id: str) -> tuple[dict[str, str], set[str]]:
        """trial id -> run id of every finished trial run of the experiment, whichever sweep logged it (a
        later sweep includes it rather than logging it again; the sweep `parent_id`'s own first), and the ids
        of the runs that are the sweep's already (logged or included by it). The sweep's unfinished runs (a
        killed driver's) and duplicates are deleted; other sweeps' are left as they are (one may be running)."""
        done: dict[str, str] = {}
        mine: set[str] = set()
        runs = self.search_runs(f"tags.`{ROLE_TAG}` = 'trial'")
        for run in sorted(runs, key=lambda r: r.data.tags.get(PARENT_TAG) != parent_id):  # the sweep's own first
            tags, run_id = run.data.tags, run.info.run_id
            own = tags.get(PARENT_TAG) == parent_id
            trial_id = tags.get(TRIAL_TAG)
            if run.info.status == "FINISHED" and trial_id and trial_id not in done:
                done[trial_id] = run_id
                if own or f"{SWEEP_TAG}{parent_id}" in tags:
                    mine.add(run_id)
            elif own:
                self.client.delete_run(run_id)
        return done, mine

    def include_trial(self, parent_id: str, run_id: str) -> None:
        """Make the trial run `run_id` (logged by another sweep) one of the sweep `parent_id`'s."""
        self.client.set_tag(run_id, f"{SWEEP_TAG}{parent_id}", "1")

    def trial_runs(self, parent_id: str) -> list[dict]:
        """The finished trial runs of a sweep, those it logged and those it included from other sweeps:
        {"run_id", "params", "metrics", "end_time"} each."""
        runs = {run.info.run_id: run for run in self.child_runs(parent_id)}
        included = f"tags.`{SWEEP_TAG}{parent_id}` = '1' and tags.`{PARENT_TAG}` != '{parent_id}'"  # others' runs
        runs.update({run.info.run_id: run for run in self.search_runs(included)})
        return [{"run_id": run.info.run_id, "params": run.data.params, "metrics": run.data.metrics,
                 "end_time": run.info.end_time}
                for run in runs.values() if run.info.status == "FINISHED" and run.data.tags.get(ROLE_TAG) == "trial"]

    def child_runs(self, parent_id: str, page: int = RUNS_PAGE) -> list:
        """Every run the sweep `parent_id` logged."""
        return self.search_runs(f"tags.`{PARENT_TAG}` = '{parent_id}'", page)

    def search_runs(self, condition: str, page: int = RUNS_PAGE) -> list:
        """Every run of the experiment meeting `condition` (a filter), page by page: one search returns at most
        one page."""
        runs, token = [], None
        with gc_paused():
            while True:
                found = self.client.search_runs([self.experiment_id], filter_string=condition, max_results=page,
                                                page_token=token)
                runs.extend(found)
                token = found.token
                if not token:
                    return runs

    def log_front(self, run_id: str, hypervolume: float, front_csv: str, summary: dict, plot) -> None:
        """A sweep's Pareto front on its parent run: the hypervolume (a metric), the front (CSV), its
        objectives and reference point (JSON) and the plot, under `pareto/`."""
        self.client.log_metric(run_id, "pareto_hypervolume", _finite_or_nan(hypervolume))
        self.client.log_text(run_id, front_csv, "pareto/front.csv")
        self.client.log_dict(run_id, summary, "pareto/front.json")
        self.client.log_artifact(run_id, str(plot), "pareto")

    def log_report(self, run_id: str, directory) -> None:
        """A sweep's report (`fairsweep report`: its page, figures and tables) on its parent run, under `report/`."""
        self.client.log_artifacts(run_id, str(directory), "report")

    def start_trial(self, parent_id: str, trial: Trial, started: float, source: dict[str, str] | None = None) -> str:
        """A RUNNING child run of the sweep `parent_id` for `trial`, which started at `started` (Unix time): its
        name, tags and the params that apply to it. `log_trial` finishes it."""
        tags = {**(source or {}), PARENT_TAG: parent_id, f"{SWEEP_TAG}{parent_id}": "1", TRIAL_TAG: trial.id,
                ROLE_TAG: "trial"}
        tags.update({f"fairsweep.stage.{kind}": stage.id for kind, stage in trial.stages.items()})
        # the run's times are the trial's own (when it trained, for how long), not when the driver logged it
        run_id = self.client.create_run(self.experiment_id, start_time=int(started * 1000), run_name=trial.run_name,
                                        tags=tags).info.run_id
        self._log_params(run_id, trial_params(trial, {}))
        return run_id

    def log_points(self, run_id: str, points: list[tuple[str, float, int]]) -> None:
        """Curve points (key, value, step) on a run, in batches."""
        from mlflow.entities import Metric

        now = _now_ms()
        self._log_metrics(run_id, [Metric(key, _finite_or_nan(value), now, step) for key, value, step in points])

    def log_trial(self, parent_id: str, trial: Trial, record: TrialRecord, curves: dict[str, list[float]],
                  model: Callable[[], nn.Module | None] | None = None, source: dict[str, str] | None = None,
                  run_id: str | None = None, logged: set[tuple[str, int]] = frozenset()) -> str:
        """The trial's run, finished: its params (those that apply to it), its splits as datasets, its metrics,
        curves (metric histories, less the points `logged` live as (key, step)), `source` tags
        (`source.source_tags`) and, if `model` is given, its final model (`model()` builds it, if its stage has
        no logged model yet; None: it cannot be read, and the run is logged without it). `run_id`: the run
        `start_trial` made while the trial trained; None: a new one."""
        from mlflow.entities import Metric

        if run_id is None:
            run_id = self.start_trial(parent_id, trial, record.timing.started, source)
        self._log_params(run_id, {k: v for k, v in trial_params(trial, record.linearization).items()
                                  if k.startswith("linearize.selected.")})  # known once the stage has run
        self.client.log_inputs(run_id, datasets=dataset_inputs(trial.spec, trial.data_digest, record.group_sizes))
        # Before the metrics: logging a model links it to the run's metrics logged so far, which MLflow does
        # by reading back every metric's history (0.4 s a trial here, on the driver's cores). The trial's
        # metrics name the model themselves instead.
        model_id = self.log_model(run_id, record, model) if model is not None else None
        now = _now_ms()
        metrics = [Metric(k, _finite_or_nan(v), now, 0, model_id=model_id) for k, v in record.metrics.items()]
        metrics.append(Metric("trial_seconds", float(record.timing.seconds), now, 0))
        metrics.extend(Metric(f"stage_seconds/{kind}", float(seconds), now, 0)  # the stages it trained
                       for kind, seconds in record.stage_seconds.items())
        metrics.extend(Metric(k, float(v), now, 0) for k, v in group_size_metrics(record.group_sizes).items())
        for key, values in curves.items():
            metrics.extend(Metric(key, _finite_or_nan(v), now, step) for step, v in enumerate(values)
                           if (key, step) not in logged)
        self._log_metrics(run_id, metrics)
        self.client.log_dict(run_id, record.to_json(), "trial.json")
        # FINISHED last: a run left unfinished (a killed driver's) is deleted and logged again
        start_ms = int(record.timing.started * 1000)
        self.client.set_terminated(run_id, "FINISHED", end_time=start_ms + int(record.timing.seconds * 1000))
        return run_id

    def log_model(self, run_id: str, record: TrialRecord, model: Callable[[], nn.Module | None]) -> str | None:
        """The trial's final model (`model()`: the stage store's, rebuilt; None if it cannot be read) as an
        output of run `run_id`: logged to the experiment if its stage has no logged model yet, else linked.
        Returns the logged model's id (None: none could be logged)."""
        from fairsweep.tracking.models import RawInputModel

        def build() -> RawInputModel | None:
            net = model()
            return None if net is None else RawInputModel(net, record.inputs).eval()

        return self.models.output(run_id, list(record.stages.values())[-1], build, record.input_shape)

    def run_model(self, run_id: str) -> str | None:
        """The id of run `run_id`'s logged model (its output), if it has one."""
        return model_output(self.client.get_run(run_id))

    def log_missing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Add metrics to a finished run, leaving out keys it has (so a re-run logs nothing twice)."""
        from mlflow.entities import Metric

        have = self.client.get_run(run_id).data.metrics
        now = _now_ms()
        missing = [Metric(k, _finite_or_nan(v), now, 0) for k, v in metrics.items() if k not in have]
        if missing:
            self.client.log_batch(run_id, metrics=missing)

    def _log_metrics(self, run_id: str, metrics: list) -> None:
        """MLflow `Metric`s on a run, 1000 a batch (the most one `log_batch` takes)."""
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])


def model_output(run) -> str | None:
    """The id of an MLflow run's logged model (its output), if it has one."""
    outputs = run.outputs
    return outputs.model_outputs[0].model_id if outputs and outputs.model_outputs else None


def sweep_run_name(name: str, overrides: list[str] | tuple[str, ...]) -> str:
    """A sweep run's name: its spec's name and the overrides it was run with (what tells two sweeps of one spec
    file apart), each key once (its last value, where it was last set), within `RUN_NAME_CHARS`: the earliest
    give way (`…`) to the latest, which a user added last."""
    last = {item.partition("=")[0]: index for index, item in enumerate(overrides)}
    kept = [item for index, item in enumerate(overrides) if last[item.partition("=")[0]] == index]
    full = " ".join([name, *kept])
    while len(full) > RUN_NAME_CHARS and len(kept) > 1:
        kept.pop(0)
        full = " ".join([name, "…", *kept])
    return full if len(full) <= RUN_NAME_CHARS else full[:RUN_NAME_CHARS - 1] + "…"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _finite_or_nan(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan
