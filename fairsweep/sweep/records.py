"""Typed records: what a finished trial leaves (`TrialRecord`, `trials/<id>.json`) and what a stored
stage holds besides its weights (`StageResult`, `stages/<kind>/<id>/result.json`).

Written by the trial's worker, read by the driver, the search, the results loader, the analysis
scripts and MLflow logging: one schema, versioned by `format`. A record of another format (an older
fairsweep's) reads as absent, so its trial is measured anew rather than misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fairsweep.files import write_json_atomic
from fairsweep.metrics.values import GroupMetrics

RECORD_FORMAT = 2


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Worker(Record):
    host: str
    pid: int
    node: str | None = None  # the Ray node id


class Timing(Record):
    started: float  # Unix time
    seconds: float  # the trial's own run, its stages and measurements


class TrialRecord(Record):
    """A finished trial: what ran, where, and every metric of its final model."""

    format: Literal[2] = RECORD_FORMAT
    trial_id: str
    name: str
    values: dict[str, Any]  # the grid (or search) values
    spec: dict[str, Any]  # the trial's spec, as JSON
    stages: dict[str, str]  # kind -> stage id, in pipeline order
    trained: dict[str, bool]  # kind -> trained by this trial (False: reused)
    lock_wait_s: dict[str, float]  # kind -> seconds spent waiting for another trial training the stage
    worker: Worker
    timing: Timing
    metrics: dict[str, float]
    accuracy: dict[Literal["base", "final"], GroupMetrics]  # with the data's own group names
    group_sizes: dict[str, dict[str, int]]  # split -> group -> samples
    input_shape: list[int]
    num_classes: int
    relu_sites: dict[str, int]  # live ReLUs of the final model per site
    model: dict[str, Any]  # the final model's `ModelArgs` (a DeepReDuce model's own width and resolution)
    linearization: dict[str, Any] = Field(default_factory=dict)  # what the method selected (DeepReDuce's)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


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
    write_json_atomic(trial_record_path(storage, record.trial_id), record.to_json())


def read_trial_record(storage: Path, trial_id: str) -> TrialRecord | None:
    """The record of a finished trial under `storage`, or None if it has not finished there (or its record
    is of another format)."""
    path = trial_record_path(storage, trial_id)
    if not path.is_file():
        return None
    content = json.loads(path.read_text())
    if content.get("format") != RECORD_FORMAT:
        return None
    try:
        return TrialRecord.model_validate(content)
    except ValidationError:
        return None
