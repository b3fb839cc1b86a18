"""The sweep driver's MLflow (`SweepTracking`, `log_trial`), and a finished sweep read back (`sweep_runs`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from fairsweep import errors
from fairsweep.errors import UserError
from fairsweep.spec import Spec, load_spec, validate_spec
from fairsweep.sweep.records import TrialRecord
from fairsweep.sweep.store import DamagedStage, StageStore
from fairsweep.tracking.content import curve_key
from fairsweep.tracking.source import source_tags
from fairsweep.tracking.stores import experiment_names
from fairsweep.tracking.tracker import Tracker


class SweepTracking:
    """The sweep driver's MLflow (`fairsweep.sweep.driver.Tracking`): the spec's experiment at its tracking
    URI, opened when the driver asks (on a thread of its own, while Ray starts)."""

    def __init__(self, uri: str, experiment: str, spec_file: str | Path | None = None):
        self.uri, self.experiment, self.spec_file = uri, experiment, spec_file
        self.tracker: Tracker | None = None
        self.source: dict[str, str] = {}  # every run's source tags (`source_tags`), once the sweep is open

    @classmethod
    def of(cls, spec, spec_file: str | Path | None = None) -> SweepTracking:
        """The tracking of a sweep of `spec`, read from `spec_file` (its runs' source; None: none)."""
        return cls(spec.tracking.uri, spec.experiment, spec_file)

    def open_sweep(self, spec, num_trials: int) -> tuple[str, dict[str, str]]:
        self.source = source_tags(self.spec_file)
        self.tracker = Tracker(self.uri, self.experiment)
        parent = self.tracker.sweep_run(spec, num_trials, self.source)
        return parent, self.tracker.finished_trials(parent)

    def log_trial(self, parent_id: str, trial, record: TrialRecord, storage: Path) -> str:
        return log_trial(self.tracker, parent_id, trial, record, storage, self.source)

    def log_missing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        self.tracker.log_missing_metrics(run_id, metrics)

    def finish_sweep(self, run_id: str, table_csv: str, summary: dict[str, float], status: str) -> None:
        self.tracker.finish_sweep(run_id, table_csv, summary, status)


def log_trial(tracker: Tracker, parent: str, trial, record: TrialRecord, storage: Path,
              source: dict[str, str] | None = None) -> str:
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
    return tracker.log_trial(parent, trial, record, curves, model, source)


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
