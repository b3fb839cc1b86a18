"""The stage store: each stage's output (model state, typed result) under its content identity.

A stage directory appears whole or not at all (written under tmp/, then renamed). Concurrent
trials that need the same missing stage serialize on a per-stage file lock: the first trains it,
the others wait and then load it. A lock dies with its process, so a killed trainer's stage is
taken over by the next trial that needs it; it resumes from the stage's last epoch checkpoint
(`checkpoints/<stage id>.pt`, deleted once the stage is stored). Every stored model can be rebuilt
from the stage alone (`load_model`): its result names the `create_model` arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from fairsweep.files import file_lock
from fairsweep.models import ModelArgs
from fairsweep.sweep.plan import Stage
from fairsweep.sweep.records import StageResult
from fairsweep.train.checkpoint import EpochCheckpoint

DATA_CACHE_DIR = "data-cache"  # decoded datasets, beside the stages


@dataclass
class StageOutput:
    state: dict[str, torch.Tensor]  # model state dict (masks included)
    result: StageResult
    trained: bool  # True if this call trained it, False if it was reused
    waited: float = 0.0  # seconds spent waiting for the stage's lock (another trial training it)


class StageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def data_cache(self) -> Path:
        """Where decoded datasets are kept: beside the stages, shared by every trial and sweep."""
        return self.root / DATA_CACHE_DIR

    def path(self, stage: Stage) -> Path:
        return self.root / "stages" / stage.kind / stage.id

    def checkpoint(self, stage: Stage, every: int) -> EpochCheckpoint | None:
        """Where `stage` saves its epoch checkpoints while it trains; None if `every` is 0 (none)."""
        return EpochCheckpoint(self._checkpoint_path(stage), every) if every else None

    def _checkpoint_path(self, stage: Stage) -> Path:
        return self.root / "checkpoints" / f"{stage.id}.pt"

    def has(self, stage: Stage) -> bool:
        return (self.path(stage) / "result.json").is_file()

    def result(self, stage: Stage) -> StageResult:
        """The stored stage's result (history, summary numbers), without loading its model."""
        return StageResult.model_validate(json.loads((self.path(stage) / "result.json").read_text()))

    def load(self, stage: Stage) -> StageOutput:
        state = torch.load(self.path(stage) / "model.pt", map_location="cpu", weights_only=True)
        return StageOutput(state, self.result(stage), trained=False)

    def load_model(self, stage: Stage) -> nn.Module:
        """The stored stage's model, rebuilt from the arguments its result names, in eval mode on the CPU."""
        output = self.load(stage)
        if output.result.model is None:
            raise ValueError(f"stage {stage.id} stores no model")
        model = ModelArgs.from_json(output.result.model).build()
        model.load_state_dict(output.state)
        return model.eval()

    def get_or_build(self, stage: Stage, build: Callable[[], tuple[dict, StageResult]]) -> StageOutput:
        """The stored output of `stage`, or `build()`'s, stored, if no trial has produced it yet."""
        if self.has(stage):
            return self.load(stage)
        asked = time.monotonic()
        with file_lock(self.root / "locks" / f"{stage.id}.lock"):
            waited = time.monotonic() - asked
            if self.has(stage):  # built by another trial while we waited
                return replace(self.load(stage), waited=waited)
            state, result = build()
            self._write(stage, state, result)
            return StageOutput(state, result, trained=True, waited=waited)

    def _write(self, stage: Stage, state: dict, result: StageResult) -> None:
        tmp = self.root / "tmp" / f"{stage.id}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        torch.save(state, tmp / "model.pt")
        (tmp / "stage.json").write_text(json.dumps({"kind": stage.kind, "id": stage.id, "config": stage.config,
                                                   "parent": stage.parent.id if stage.parent else None}, indent=1))
        (tmp / "result.json").write_text(json.dumps(result.model_dump(mode="python"), indent=1))
        final = self.path(stage)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a half-written leftover cannot be here (rename is atomic); a stale dir can
            shutil.rmtree(final)
        os.rename(tmp, final)
        self._checkpoint_path(stage).unlink(missing_ok=True)
