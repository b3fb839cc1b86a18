"""The sweep driver's MLflow (`SweepTracking`, `log_trial`), and a finished sweep read back (`sweep_runs`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fairsweep import errors
from fairsweep.errors import UserError
from fairsweep.spec import Spec, load_spec, validate_spec
from fairsweep.sweep.records import TrialRecord, read_trial_record
from fairsweep.sweep.store import DamagedStage, StageStore, StoredStage
from fairsweep.tracking.content import curve_key
from fairsweep.tracking.source import source_tags
from fairsweep.tracking.stores import experiment_names
from fairsweep.tracking.tracker import TRIAL_TAG, Tracker, model_output


class SweepTracking:
    """The sweep driver's MLflow (`fairsweep.sweep.driver.Tracking`): the spec's experiment at its tracking
    URI, opened when the driver asks (on a thread of its own, while Ray starts)."""

    def __init__(self, uri: str, experiment: str, spec_file: str | Path | None = None, overrides: list[str] = ()):
        self.uri, self.experiment, self.spec_file, self.overrides = uri, experiment, spec_file, list(overrides)
        self.tracker: Tracker | None = None
        self.source: dict[str, str] = {}  # every run's source tags (`source_tags`), once the sweep is open
        self.mine: set[str] = set()  # the trial runs the sweep's run holds: those it logged or included
        self.logged_before: set[str] = set()  # the trials the experiment held finished when the sweep opened
        self.live: dict[str, tuple[str, set[tuple[str, int]]]] = {}  # trial id -> its RUNNING run, points logged

    @classmethod
    def of(cls, spec, spec_file: str | Path | None = None, overrides: list[str] = ()) -> SweepTracking:
        """The tracking of a sweep of `spec`, read from `spec_file` (its runs' source; None: none) with the
        `--set` `overrides` (its run's name)."""
        return cls(spec.tracking.uri, spec.experiment, spec_file, overrides)

    def open_sweep(self, spec, num_trials: int) -> tuple[str, dict[str, str]]:
        self.source = source_tags(self.spec_file)
        self.tracker = Tracker(self.uri, self.experiment)
        parent = self.tracker.sweep_run(spec, num_trials, self.source, self.overrides)
        logged, self.mine = self.tracker.finished_trials(parent)
        self.logged_before = set(logged)
        return parent, logged

    def log_live(self, parent_id: str, trial, started: float, rows: list) -> None:
        """History rows `[kind, index, row]` of a trial as it trains, as curve points of its run (made RUNNING
        on the first; `log_trial` finishes it and logs only the points not logged here)."""
        if trial.id in self.logged_before:  # logged by another sweep already: only included, never re-logged
            return
        if trial.id not in self.live:
            self.live[trial.id] = (self.tracker.start_trial(parent_id, trial, started, self.source), set())
        run_id, logged = self.live[trial.id]
        points = [(f"{kind}/{curve_key(key)}", value, index) for kind, index, row in rows
                  for key, value in row.items() if key != "epoch"]
        points = [point for point in points if (point[0], point[2]) not in logged]
        self.tracker.log_points(run_id, points)
        logged.update((key, step) for key, _, step in points)

    def end_live(self, status: str) -> None:
        """The runs of trials that trained but did not finish (failed, stopped) end with `status`; a re-run
        deletes them and logs their trials anew."""
        for run_id, _ in self.live.values():
            self.tracker.client.set_terminated(run_id, status)
        self.live.clear()

    def include_trial(self, parent_id: str, run_id: str) -> None:
        if run_id not in self.mine:
            self.tracker.include_trial(parent_id, run_id)
            self.mine.add(run_id)

    def log_trial(self, parent_id: str, trial, record: TrialRecord, storage: Path) -> str:
        live_run, logged = self.live.pop(trial.id, (None, set()))
        run_id = log_trial(self.tracker, parent_id, trial, record, storage, self.source, live_run, logged)
        self.mine.add(run_id)
        return run_id

    def log_missing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        self.tracker.log_missing_metrics(run_id, metrics)

    def log_models(self, run_ids: list[str], storage: Path) -> None:
        for run_id in run_ids:
            log_run_model(self.tracker, run_id, storage)

    def finish_sweep(self, run_id: str, table_csv: str, summary: dict[str, float], status: str) -> None:
        self.tracker.finish_sweep(run_id, table_csv, summary, status)


def log_trial(tracker: Tracker, parent: str, trial, record: TrialRecord, storage: Path,
              source: dict[str, str] | None = None, run_id: str | None = None,
              logged: set[tuple[str, int]] = frozenset()) -> str:
    """Log a finished trial with its stages' curves (`<kind>/<key>`, one point per epoch; less the points
    `logged` live on its run `run_id`, if it has one) and its final model (`tracking.log_models: all`)."""
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
    if trial.spec.tracking.log_models == "all" and store.has(trial.final):
        model = partial(_load_model, store, trial.final)  # only if its stage has no logged model yet
    return tracker.log_trial(parent, trial, record, curves, model, source, run_id, logged)


def _load_model(store: StageStore, stage):
    """The stored stage's model; None if it cannot be read whole (a trial is logged without it rather than never)."""
    try:
        return store.load_model(stage)
    except DamagedStage:
        return None


def log_run_model(tracker: Tracker, run_id: str, storage: Path) -> str | None:
    """The id of the logged model of the trial logged as run `run_id`: the run's output, made so if it has none
    yet (linked to its stage's logged model, or logged from the stage store at `storage`). None if the run has
    none and its trial's record or final stage is not in the store (or cannot be read)."""
    run = tracker.client.get_run(run_id)
    if (model_id := model_output(run)) is not None:
        return model_id
    trial_id = run.data.tags.get(TRIAL_TAG)
    record = read_trial_record(storage, trial_id) if trial_id else None
    if record is None:
        return None
    store, final = StageStore(storage), StoredStage(list(record.stages.values())[-1])
    if not store.has(final):
        return None
    return tracker.log_model(run_id, record, partial(_load_model, store, final))


def register_front(sweep: SweepRuns, front, name: str, storage: Path) -> tuple[list[str], list[str], list[str]]:
    """The final models of the trials on `front` (a `pareto.Front` of `sweep`) as versions of the registered
    model `name` (made if missing), each tagged with the objectives, their seed means and the trial's own
    values, and its run. A run registered under `name` before is not registered again. Returns the run ids
    registered now, those registered before, and those whose model is neither logged nor in `storage`."""
    from mlflow.exceptions import MlflowException

    client = sweep.tracker.client
    try:
        client.create_registered_model(name, description=f"models of the Pareto front of sweep {sweep.spec.name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    before = {version.run_id for version in _model_versions(client, name)}
    values = {run["run_id"]: run["metrics"] for run in sweep.runs}
    registered, kept, missing = [], [], []
    for _, row in front.front.iterrows():
        for run_id in row["run_ids"]:
            if run_id in before:
                kept.append(run_id)
                continue
            model_id = log_run_model(sweep.tracker, run_id, storage)
            if model_id is None:
                missing.append(run_id)
                continue
            tags = {"fairsweep.objectives": json.dumps(front.objectives), "fairsweep.sweep_run_id": sweep.parent_run_id,
                    **{f"mean.{metric}": f"{row[metric]:.6g}" for metric in front.objectives},
                    **{f"trial.{metric}": f"{values[run_id].get(metric, math.nan):.6g}" for metric in front.objectives}}
            client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id)
            registered.append(run_id)
    return registered, kept, missing


def _model_versions(client, name: str) -> list:
    """Every version of the registered model `name`, page by page."""
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions
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
