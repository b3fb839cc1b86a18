"""Everything MLflow: one experiment per sweep name, a parent run per sweep, a child run per trial
with its parameters (flat dotted keys), metrics, per-epoch curves and its final model.

Only the sweep driver talks to MLflow, so the embedded SQLite store never sees concurrent writers.
A child run is marked FINISHED only after everything of it is logged; an unfinished one left by a
killed driver is deleted and logged again, so a resumed sweep never holds duplicate trial runs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairsweep import __version__, errors
from fairsweep.errors import UserError, unwritable
from fairsweep.metrics.values import group_size_metrics, safe_key
from fairsweep.spec import Spec, load_spec, validate_spec
from fairsweep.sweep.records import TrialRecord
from fairsweep.sweep.store import DamagedStage, StageStore

ROLE_TAG = "fairsweep.role"
SPEC_HASH_TAG = "fairsweep.spec_hash"
TRIAL_TAG = "fairsweep.trial_id"
PARENT_TAG = "mlflow.parentRunId"

# No usage reports sent from the sweeps (as Ray's usage stats): MLflow reads this when it is first
# imported, which in fairsweep happens only in this module, after this line.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


RUNS_PAGE = 1000  # runs per MLflow search (a server caps a page; more are fetched page by page)


def absolute_uri(uri: str) -> str:
    """A relative SQLite store (`sqlite:///mlflow.db`) made absolute against the working directory now.

    MLflow keeps one store per URI for the life of the process, so a relative one would otherwise stay
    bound to whichever directory it was first used in.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


def tracking_problems(uri: str, timeout: float = 3.0) -> list[str]:
    """What would make logging to `uri` fail, found in a few seconds before any training: a tracking
    server that does not answer, a SQLite database in a directory that cannot be written."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout).close()
        except OSError as exc:
            reason = f"nothing answers at {parsed.hostname}:{port} ({exc.strerror or exc})"
            return [errors.TRACKING_UNREACHABLE.format(uri=uri, reason=reason, port=port)]
    elif uri.startswith("sqlite:///") and ":memory:" not in uri:
        database = Path(absolute_uri(uri)[len("sqlite:///"):])
        if database.is_dir():
            return [errors.TRACKING_NOT_WRITABLE.format(uri=uri, reason=f"{database} is a directory")]
        if reason := unwritable(database.parent):
            return [errors.TRACKING_NOT_WRITABLE.format(uri=uri, reason=reason)]
    return []


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and None become their JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


class Tracker:
    def __init__(self, uri: str, experiment: str):
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        from fairsweep.sweep.ray_session import verbose

        if not verbose():
            # Models are saved by pickle (see log_trial), and MLflow warns about that on every model.
            logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
            # Creating or upgrading the embedded database's tables is routine, not news for the user
            for name in ("mlflow.store.db.utils", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model read
        uri = absolute_uri(uri)
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

    def sweep_run(self, spec, num_trials: int) -> str:
        """The parent run of this spec: the one a previous run of the same spec made, or a new one."""
        spec_hash = spec.content_hash()
        run_id = self.find_sweep_run(spec)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=spec.name, tags={
            ROLE_TAG: "sweep", SPEC_HASH_TAG: spec_hash, "fairsweep.version": __version__})
        params = flatten(spec.model_dump(mode="json", exclude={"sweep"}))
        params.update({f"sweep.grid.{k}": json.dumps(v) for k, v in spec.sweep.grid.items()})
        if spec.sweep.search is not None:
            params.update(flatten(spec.sweep.search.model_dump(mode="json"), "sweep.search."))
        params["sweep.num_trials"] = num_trials
        self._log_params(run.info.run_id, params)
        self.client.log_dict(run.info.run_id, spec.model_dump(mode="json"), "spec.json")
        return run.info.run_id

    def finish_sweep(self, run_id: str, table_csv: str, summary: dict[str, float], status: str) -> None:
        from mlflow.entities import Metric

        if table_csv:
            self.client.log_text(run_id, table_csv, "results.csv")
        metrics = [Metric(k, float(v), _now_ms(), 0) for k, v in summary.items()]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, status=status)

    # --- trials ---------------------------------------------------------------------------

    def finished_trials(self, parent_id: str) -> dict[str, str]:
        """trial id -> run id of the finished child runs; unfinished ones (a killed driver's) are deleted."""
        done: dict[str, str] = {}
        for run in self.child_runs(parent_id):
            trial_id = run.data.tags.get(TRIAL_TAG)
            if run.info.status == "FINISHED" and trial_id and trial_id not in done:
                done[trial_id] = run.info.run_id
            else:
                self.client.delete_run(run.info.run_id)
        return done

    def trial_runs(self, parent_id: str) -> list[dict]:
        """The finished trial runs of a sweep: {"run_id", "params", "metrics", "end_time"} each."""
        return [{"run_id": run.info.run_id, "params": run.data.params, "metrics": run.data.metrics,
                 "end_time": run.info.end_time}
                for run in self.child_runs(parent_id)
                if run.info.status == "FINISHED" and run.data.tags.get(ROLE_TAG) == "trial"]

    def child_runs(self, parent_id: str, page: int = RUNS_PAGE) -> list:
        """Every run of the sweep `parent_id`, page by page: one search returns at most one page."""
        runs, token = [], None
        while True:
            found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
                                            max_results=page, page_token=token)
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

    def log_report(self, run_id: str, directory: Path) -> None:
        """A sweep's report (`fairsweep report`: its page, figures and tables) on its parent run, under `report/`."""
        self.client.log_artifacts(run_id, str(directory), "report")

    def log_trial(self, parent_id: str, record: TrialRecord, curves: dict[str, list[float]], model=None) -> str:
        """A child run with the trial's params, metrics, curves (metric histories) and model."""
        import mlflow
        from mlflow.entities import Metric

        tags = {PARENT_TAG: parent_id, TRIAL_TAG: record.trial_id, ROLE_TAG: "trial"}
        tags.update({f"fairsweep.stage.{kind}": stage_id for kind, stage_id in record.stages.items()})
        # the run's times are the trial's own (when it trained, for how long), not when the driver logged it
        start_ms = int(record.timing.started * 1000)
        run_id = self.client.create_run(self.experiment_id, start_time=start_ms, run_name=record.name,
                                        tags=tags).info.run_id
        spec = dict(record.spec)
        spec.pop("sweep", None)
        params = flatten(spec)
        params.update(flatten(record.linearization, "linearize.selected."))
        self._log_params(run_id, params)
        with mlflow.start_run(run_id=run_id):  # leaving the block marks the run FINISHED, last
            model_id = None
            if model is not None:
                import torch

                # Logged before the metrics: logging a model links it to the run's metrics logged so far,
                # which MLflow does by reading back every metric's history (0.4 s a trial here, on the
                # driver's cores). The trial's metrics name the model themselves instead.
                # pickle: the default `pt2` format would trace the model and needs an input example
                requirements = [f"torch=={torch.__version__.split('+')[0]}", f"fairsweep=={__version__}"]
                model_id = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle",
                                                    pip_requirements=requirements).model_id
            now = _now_ms()
            metrics = [Metric(k, _finite_or_nan(v), now, 0, model_id=model_id) for k, v in record.metrics.items()]
            metrics.append(Metric("trial_seconds", float(record.timing.seconds), now, 0))
            metrics.extend(Metric(k, float(v), now, 0) for k, v in group_size_metrics(record.group_sizes).items())
            for key, values in curves.items():
                metrics.extend(Metric(key, _finite_or_nan(v), now, step) for step, v in enumerate(values))
            for start in range(0, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
            self.client.log_dict(run_id, record.to_json(), "trial.json")
        self.client.set_terminated(run_id, "FINISHED", end_time=start_ms + int(record.timing.seconds * 1000))
        return run_id

    def log_missing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Add metrics to a finished run, leaving out keys it has (so a re-run logs nothing twice)."""
        from mlflow.entities import Metric

        have = self.client.get_run(run_id).data.metrics
        now = _now_ms()
        missing = [Metric(k, _finite_or_nan(v), now, 0) for k, v in metrics.items() if k not in have]
        if missing:
            self.client.log_batch(run_id, metrics=missing)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start:start + 100])


def experiment_names(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [exp.name for exp in MlflowClient(absolute_uri(uri)).search_experiments()]


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _finite_or_nan(value: Any) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


class SweepTracking:
    """The sweep driver's MLflow (`fairsweep.sweep.driver.Tracking`): the spec's experiment at its tracking
    URI, opened when the driver asks (on a thread of its own, while Ray starts)."""

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.tracker: Tracker | None = None

    @classmethod
    def of(cls, spec) -> SweepTracking:
        return cls(spec.tracking.uri, spec.experiment)

    def open_sweep(self, spec, num_trials: int) -> tuple[str, dict[str, str]]:
        self.tracker = Tracker(self.uri, self.experiment)
        parent = self.tracker.sweep_run(spec, num_trials)
        return parent, self.tracker.finished_trials(parent)

    def log_trial(self, parent_id: str, trial, record: TrialRecord, storage: Path) -> str:
        return log_trial(self.tracker, parent_id, trial, record, storage)

    def log_missing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        self.tracker.log_missing_metrics(run_id, metrics)

    def finish_sweep(self, run_id: str, table_csv: str, summary: dict[str, float], status: str) -> None:
        self.tracker.finish_sweep(run_id, table_csv, summary, status)


def log_trial(tracker: Tracker, parent: str, trial, record: TrialRecord, storage: Path) -> str:
    """Log a finished trial with its stages' curves (`<kind>/<key>`, one point per epoch) and its final model."""
    store = StageStore(storage)
    curves: dict[str, list[float]] = {}
    for kind, stage in trial.stages.items():
        try:
            history = store.result(stage).history if store.has(stage) else []
        except DamagedStage:  # the record holds the trial's numbers; only this stage's curves are lost
            history = []
        for key in sorted({k for row in history for k in row} - {"epoch"}):
            curves[f"{kind}/{curve_key(key)}"] = [row.get(key, math.nan) for row in history]
    model = None
    if trial.spec.tracking.log_models and store.has(trial.final):
        try:
            model = store.load_model(trial.final)
        except DamagedStage:  # logged without its model rather than never
            model = None
    return tracker.log_trial(parent, record, curves, model)


def curve_key(key: str) -> str:
    """A stage history's key as an MLflow key: a per-group curve (`multiplier/<group>`) with the group's key."""
    head, slash, group = key.partition("/")
    return f"{head}/{safe_key(group)}" if slash else key


@dataclass
class SweepRuns:
    """A finished (or partly finished) sweep as MLflow holds it."""

    spec: Spec
    parent_run_id: str
    runs: list[dict]  # its finished trial runs: {"run_id", "params", "metrics"}
    tracker: Tracker


def sweep_runs(target: str, overrides: list[str], tracking_uri: str) -> SweepRuns:
    """The sweep of a spec file (its MLflow parent run, by content hash), or the latest sweep of an
    MLflow experiment named `target` in the store at `tracking_uri`."""

    is_spec = Path(target).expanduser().is_file() or target.endswith((".yaml", ".yml"))
    if is_spec:
        spec = load_spec(target, overrides)
        uri, experiment, what = spec.tracking.uri, spec.experiment, f"spec {target}"
    else:
        uri, experiment, what = tracking_uri, target, f"experiment `{target}`"
    names = experiment_names(uri)
    if experiment not in names:
        if is_spec or not names:
            raise UserError(errors.NO_SWEEP_RUN.format(what=what, uri=uri))
        raise UserError(errors.unknown_name("MLflow experiment", target, names) + " (or give a spec file)")
    tracker = Tracker(uri, experiment)
    parent = tracker.find_sweep_run(spec) if is_spec else tracker.latest_sweep_run()
    if parent is None:
        raise UserError(errors.NO_SWEEP_RUN.format(what=what, uri=uri))
    if not is_spec:
        spec = validate_spec(tracker.sweep_spec(parent))
    runs = tracker.trial_runs(parent)
    if not runs:
        raise UserError(errors.NO_FINISHED_TRIALS.format(what=what, uri=uri))
    return SweepRuns(spec, parent, runs, tracker)
