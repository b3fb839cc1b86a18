"""Typed records: what a finished trial leaves (`TrialRecord`, `trials/<id>.json`) and what a stored
stage holds besides its weights (`StageResult`, `stages/<kind>/<id>/result.json`).

Written by the trial's worker, read by the driver, the search, the results loader, the analysis
scripts and MLflow logging: one schema, versioned by `format`. A record of another format (an older
fairsweep's) reads as absent, so its trial is measured anew rather than misread. One that cannot be read
(cut short, not valid) is moved to `<storage>/damaged/trials/`, with a warning naming it, and reads as
absent too.

A trial record, once written, keeps its measurement: a run that finishes the trial again (a second driver
sharing the storage, a retry) adds only where, when and what it trained to `later_attempts`. Writers
serialize on the trial's lock (`<storage>/locks/<trial id>.lock`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fairsweep.files import file_lock, move_aside, unreadable, write_json_atomic
from fairsweep.metrics.values import GroupMetrics

RECORD_FORMAT = 3  # 3: later_attempts


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Worker(Record):
    host: str
    pid: int
    node: str | None = None  # the Ray node id


class Timing(Record):
    started: float  # Unix time
    seconds: float  # the trial's own run, its stages and measurements


class Attempt(Record):
    """One run that finished a trial: where and when it ran, which stages it trained (False: reused), how
    long it waited for stages other trials were training and how long it took to compute (and store) those
    it trained, by stage kind."""

    worker: Worker
    timing: Timing
    trained: dict[str, bool]
    lock_wait_s: dict[str, float]
    stage_seconds: dict[str, float] = Field(default_factory=dict)


class TrialRecord(Record):
    """A finished trial: what ran, where, and every metric of its final model."""

    format: Literal[3] = RECORD_FORMAT
    trial_id: str
    name: str
    values: dict[str, Any]  # the grid (or search) values
    spec: dict[str, Any]  # the trial's spec, as JSON
    stages: dict[str, str]  # kind -> stage id, in pipeline order
    trained: dict[str, bool]  # kind -> trained by this trial (False: reused)
    lock_wait_s: dict[str, float]  # kind -> seconds spent waiting for another trial training the stage
    # kind -> seconds this run spent computing and storing the stage: those it trained only (`diagnose`
    # included, the base model's diagnostics), none for a reused one. Not in records written before it.
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    worker: Worker
    timing: Timing
    metrics: dict[str, float]
    accuracy: dict[Literal["base", "final"], GroupMetrics]  # with the data's own group names
    group_sizes: dict[str, dict[str, int]]  # split -> group -> samples
    input_shape: list[int]
    # the raw inputs and how they become the model's (`GroupedData.preprocessing`); None: recorded before it was
    inputs: dict[str, Any] | None = None
    num_classes: int
    relu_sites: dict[str, int]  # live ReLUs of the final model per site
    model: dict[str, Any]  # the final model's `ModelArgs` (a DeepReDuce model's own width and resolution)
    linearization: dict[str, Any] = Field(default_factory=dict)  # what the method selected (DeepReDuce's)
    later_attempts: list[Attempt] = Field(default_factory=list)  # runs that finished it again, first to last

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    def attempt(self) -> Attempt:
        """The run that measured the trial (`worker`, `timing`, `trained`, `lock_wait_s`, `stage_seconds`)."""
        return Attempt(worker=self.worker, timing=self.timing, trained=self.trained, lock_wait_s=self.lock_wait_s,
                       stage_seconds=self.stage_seconds)

    def last_attempt(self) -> Attempt:
        """The latest run that finished the trial: a driver reading the record its trial just wrote finds its own."""
        return self.later_attempts[-1] if self.later_attempts else self.attempt()


class StageResult(Record):
    """What a stored stage holds besides its weights (`model.pt`)."""

    history: list[dict[str, float]] = Field(default_factory=list)  # one row per epoch; MLflow curves
    model: dict[str, Any] | None = None  # `ModelArgs` of the stored model (None: the stage stores no model)
    relu_count: int | None = None  # live ReLUs of the stored model
    selected: dict[str, Any] = Field(default_factory=dict)  # a linearization method's choice
    resumed_from_epoch: int | None = None  # the epoch checkpoint training resumed from
    diagnostics: dict[str, Any] | None = None  # a `diagnose` stage's measurements (`Diagnostics.to_json`)


def trial_record_path(storage: Path, trial_id: str) -> Path:
    return Path(storage).expanduser().resolve() / "trials" / f"{trial_id}.json"


def write_trial_record(storage: Path, record: TrialRecord) -> None:
    """Store the record of a trial just finished; if the trial has one already, that one stays and this run
    joins its `later_attempts`."""
    path = trial_record_path(storage, record.trial_id)
    with _record_lock(path):
        stored = _read_or_move_aside(path)
        if stored is not None:
            record = stored.model_copy(update={"later_attempts": [*stored.later_attempts, record.attempt()]})
        write_json_atomic(path, record.to_json())


def update_trial_metrics(storage: Path, trial_id: str, metrics: dict[str, float]) -> None:
    """Add or change metrics of a stored trial record (those known once other trials finished)."""
    path = trial_record_path(storage, trial_id)
    with _record_lock(path):
        stored = _read_or_move_aside(path)
        if stored is not None:
            stored.metrics.update(metrics)
            write_json_atomic(path, stored.to_json())


def read_trial_record(storage: Path, trial_id: str) -> TrialRecord | None:
    """The record of a finished trial under `storage`, or None if it has not finished there (or its record
    is of another format, or cannot be read: it is then moved aside)."""
    path = trial_record_path(storage, trial_id)
    try:
        return _parse(path)
    except _Damaged:
        with _record_lock(path):  # lest a whole record another run has just written be moved aside instead
            return _read_or_move_aside(path)


class _Damaged(Exception):
    pass


def _parse(path: Path) -> TrialRecord | None:
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # cut short: JSONDecodeError; bytes that are no text: UnicodeDecodeError
        raise _Damaged(unreadable(exc)) from None
    if not isinstance(content, dict):
        raise _Damaged(f"a JSON {type(content).__name__}, not an object")
    if content.get("format") != RECORD_FORMAT:
        return None
    try:
        return TrialRecord.model_validate(content)
    except ValidationError as exc:
        raise _Damaged(unreadable(exc)) from None


def _read_or_move_aside(path: Path) -> TrialRecord | None:
    """Under the record's lock: the record at `path`, or None; one that cannot be read is moved aside."""
    try:
        return _parse(path)
    except _Damaged as damage:
        move_aside(path, path.parent.parent, str(damage))  # <storage>/trials/<id>.json
        return None


def _record_lock(path: Path):
    return file_lock(path.parent.parent / "locks" / f"{path.stem}.lock")
