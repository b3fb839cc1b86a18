"""The stage store: each stage's output (model state, typed result) under its content identity.

A stage directory appears whole or not at all (written under tmp/, every file fsynced, then renamed).
Its `stage.json` names what it computes, who trained it (host, pid, Ray node, trial, time) and the size
and sha256 of `model.pt` and `result.json`. `has` compares the sizes (what a kill or a power loss leaves
is short; a stat per file, so `validate` counts hundreds of stages at once); loading checks the checksums
too. A stage that cannot be read whole is moved to `<storage>/damaged/stages/<kind>/`, with a warning
naming it, and trained again by whichever trial needs it. Concurrent
trials that need the same missing stage serialize on a per-stage file lock: the first trains it,
the others wait and then load it. A lock dies with its process, so a killed trainer's stage is
taken over by the next trial that needs it; it resumes from the stage's last epoch checkpoint
(`checkpoints/<stage id>.pt`, deleted once the stage is stored). Every stored model can be rebuilt
from the stage alone (`load_model`): its result names the `create_model` arguments.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fairsweep.files import file_lock, fsync, move_aside, unreadable, write_synced
from fairsweep.sweep.records import StageResult

if TYPE_CHECKING:  # torch, and what imports it, only where a model is read or written: reading results needs none
    import torch
    from torch import nn

    from fairsweep.sweep.plan import Stage
    from fairsweep.train.checkpoint import EpochCheckpoint

DATA_CACHE_DIR = "data-cache"  # decoded datasets, beside the stages
STAGE_FILES = ("model.pt", "result.json")  # what stage.json holds the size and checksum of


class DamagedStage(Exception):
    """A stored stage that cannot be read whole; the message says which file and why."""


@dataclass
class StageOutput:
    state: dict[str, torch.Tensor]  # model state dict (masks included)
    result: StageResult
    trained: bool  # True if this call trained it, False if it was reused
    waited: float = 0.0  # seconds spent waiting for the stage's lock (another trial training it)


@dataclass(frozen=True)
class StoredStage:
    """A stored stage known by its id alone (as a trial record names its stages): enough to read it."""

    id: str

    @property
    def kind(self) -> str:
        return self.id.split("-", 1)[0]  # a stage id is `<kind>-<digest>` (`Stage.id`)


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
        from fairsweep.train.checkpoint import EpochCheckpoint

        return EpochCheckpoint(self._checkpoint_path(stage), every) if every else None

    def _checkpoint_path(self, stage: Stage) -> Path:
        return self.root / "checkpoints" / f"{stage.id}.pt"

    def has(self, stage: Stage) -> bool:
        """Whether `stage` is stored whole, as its files' sizes tell (a stat per file: what a kill or a power
        loss leaves is short); loading it checks the checksums too."""
        try:
            files = self._manifest(stage)
        except DamagedStage:  # no stage.json (nothing stored), or a damaged one
            return False
        for name in STAGE_FILES:
            path = self.path(stage) / name
            if not path.is_file() or (files is not None and path.stat().st_size != files[name]["bytes"]):
                return False
        return True

    def _manifest(self, stage: Stage) -> dict[str, dict[str, Any]] | None:
        """stage.json's sizes and checksums of the stage's files (None: a stage stored before they were kept)."""
        try:
            files = json.loads((self.path(stage) / "stage.json").read_text()).get("files")
            return None if files is None else {name: files[name] for name in STAGE_FILES}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DamagedStage(f"stage.json: {unreadable(exc)}") from None

    def _read(self, stage: Stage, name: str) -> bytes:
        """One of the stage's files, checked against stage.json's size and checksum; raises DamagedStage."""
        files = self._manifest(stage)
        try:
            data = (self.path(stage) / name).read_bytes()
        except OSError as exc:
            raise DamagedStage(f"{name}: {unreadable(exc)}") from None
        if files is not None and len(data) != files[name]["bytes"]:
            raise DamagedStage(f"{name} has {len(data)} bytes, stage.json says {files[name]['bytes']}")
        if files is not None and _sha256(data) != files[name]["sha256"]:
            raise DamagedStage(f"{name}'s sha256 differs from the one stage.json holds")
        return data

    def result(self, stage: Stage) -> StageResult:
        """The stored stage's result (history, summary numbers), without loading its model."""
        try:
            return StageResult.model_validate(json.loads(self._read(stage, "result.json")))
        except (ValueError, ValidationError) as exc:
            raise DamagedStage(f"result.json: {unreadable(exc)}") from None

    def load(self, stage: Stage) -> StageOutput:
        """The stored stage's model state and result; raises DamagedStage if it cannot be read whole."""
        import torch  # heavy: see the imports above

        data = self._read(stage, "model.pt")
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # a file of a stage stored before checksums: a truncated zip's error
            raise DamagedStage(f"model.pt: {unreadable(exc)}") from None
        return StageOutput(state, self.result(stage), trained=False)

    def load_model(self, stage: Stage) -> nn.Module:
        """The stored stage's model, rebuilt from the arguments its result names, in eval mode on the CPU."""
        from fairsweep.models import ModelArgs

        output = self.load(stage)
        if output.result.model is None:
            raise ValueError(f"stage {stage.id} stores no model")
        model = ModelArgs.from_json(output.result.model).build()
        model.load_state_dict(output.state)
        return model.eval()

    def get_or_build(self, stage: Stage, build: Callable[[], tuple[dict, StageResult]], trial: str | None = None,
                     node: str | None = None) -> StageOutput:
        """The stored output of `stage`, or `build()`'s, stored, if no trial has produced it yet (or what was
        stored cannot be read whole: it is moved aside). `trial` and `node` (a Ray node id) name the trainer."""
        if self.has(stage):
            try:
                return self.load(stage)
            except DamagedStage:  # moved aside below, under the lock
                pass
        asked = time.monotonic()
        with file_lock(self.root / "locks" / f"{stage.id}.lock"):
            waited = time.monotonic() - asked
            if self.path(stage).exists():  # stored, or built by another trial while we waited
                try:
                    return replace(self.load(stage), waited=waited)
                except DamagedStage as damage:
                    move_aside(self.path(stage), self.root, str(damage))
            state, result = build()
            self._write(stage, state, result, {"host": socket.gethostname(), "pid": os.getpid(), "node": node,
                                               "trial": trial, "time": time.time()})
            return StageOutput(state, result, trained=True, waited=waited)

    def _write(self, stage: Stage, state: dict, result: StageResult, trained_by: dict[str, Any]) -> None:
        import torch  # heavy: see the imports above

        tmp = self.root / "tmp" / f"{stage.id}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        model = io.BytesIO()
        torch.save(state, model)
        contents = {"model.pt": model.getvalue(),
                    "result.json": json.dumps(result.model_dump(mode="python"), indent=1).encode()}
        for name, data in contents.items():
            write_synced(tmp / name, data)
        write_synced(tmp / "stage.json", json.dumps({
            "kind": stage.kind, "id": stage.id, "config": stage.config,
            "parent": stage.parent.id if stage.parent else None, "trained_by": trained_by,
            "files": {name: {"bytes": len(data), "sha256": _sha256(data)} for name, data in contents.items()},
        }, indent=1).encode())
        fsync(tmp)
        final = self.path(stage)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)  # nothing is there: the caller holds the lock and moved any damaged stage aside
        fsync(final.parent)
        self._checkpoint_path(stage).unlink(missing_ok=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
