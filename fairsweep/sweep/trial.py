"""One trial: run the stages it needs through the store, then measure its final model.

Plain Python, no Ray: the Tune trainable, the tests and the benchmarks all call `run_trial`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairsweep.data import Splits, load_splits
from fairsweep.data.cache import DataCache
from fairsweep.errors import NO_GPU, UserError
from fairsweep.linearize import count_relus
from fairsweep.metrics.diagnostics import Diagnostics, diagnose, theorem_bound
from fairsweep.metrics.groups import evaluate, param_distance, trial_metrics
from fairsweep.models import create_model
from fairsweep.spec import Spec
from fairsweep.sweep.plan import Trial
from fairsweep.files import write_json_atomic
from fairsweep.sweep.store import StageStore
from fairsweep.train import stages


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(NO_GPU)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def build_model(spec: Spec, num_classes: int, input_shape: tuple[int, ...], architecture: dict | None = None
                ) -> nn.Module:
    """The spec's model; `architecture` overrides its arguments (a DeepReDuce stage's width and resolution)."""
    kwargs = {**spec.model.factory_kwargs(), **(architecture or {})}
    return create_model(spec.model.arch, num_classes=num_classes, in_channels=input_shape[0], **kwargs)


def seed_everything(seed: int, salt: str) -> torch.Generator:
    """Reseed torch for one stage; returns the generator of its batch order.

    Every stage reseeds from (seed, stage kind), so it computes the same whether or not the stages
    before it were trained in this process.
    """
    stage_seed = int.from_bytes(hashlib.sha256(f"{seed}/{salt}".encode()).digest()[:4], "little")
    torch.manual_seed(stage_seed)
    return torch.Generator().manual_seed(stage_seed)


def trial_record_path(storage: Path, trial_id: str) -> Path:
    return Path(storage).expanduser().resolve() / "trials" / f"{trial_id}.json"


def read_trial_record(storage: Path, trial_id: str) -> dict[str, Any] | None:
    """The record of a finished trial under `storage`, or None if it has not finished there."""
    path = trial_record_path(storage, trial_id)
    return json.loads(path.read_text()) if path.is_file() else None


def run_trial(trial: Trial, store: StageStore, device: str = "cpu", node: str | None = None) -> dict[str, Any]:
    """Run (or reuse) the trial's stages, measure the final model, write and return the trial record.
    `node` names where it runs (a Ray node id) for the record."""
    started, clock = time.time(), time.perf_counter()
    spec = trial.spec
    every = spec.resources.checkpoint_every
    dev = resolve_device(device)
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")
    splits: Splits = load_splits(spec.data, spec.seed, DataCache(store.data_cache)).to(dev)
    input_shape = tuple(splits.train.x.shape[1:])
    num_classes = len(splits.train.class_names)

    def fresh(state: dict | None = None, architecture: dict | None = None) -> nn.Module:
        model = build_model(spec, num_classes, input_shape, architecture)
        if state is not None:
            model.load_state_dict(state)
        return model.to(dev)

    def cpu_state(model: nn.Module) -> dict:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def stage_result(checkpoint, **result) -> dict:
        """A trained stage's result, saying where training resumed from a checkpoint."""
        if checkpoint is not None and checkpoint.resumed_from:
            result["resumed_from_epoch"] = checkpoint.resumed_from
        return result

    def build_base():
        generator = seed_everything(spec.seed, "base")
        model = fresh()
        checkpoint = store.checkpoint(trial.stages["base"], every)
        history = stages.train_base(model, splits, spec, generator, checkpoint)
        return cpu_state(model), stage_result(checkpoint, history=history)

    base_out = store.get_or_build(trial.stages["base"], build_base)
    base = fresh(base_out.state)

    def build_linearize():
        generator = seed_everything(spec.seed, "linearize")
        checkpoint = store.checkpoint(trial.stages["linearize"], every)
        linearized = stages.linearize(copy.deepcopy(base), splits, spec, generator, checkpoint)
        return cpu_state(linearized.model), stage_result(
            checkpoint, history=linearized.history, relu_count=count_relus(linearized.model, input_shape).total,
            architecture=linearized.architecture, selected=linearized.selected)

    lin_out = store.get_or_build(trial.stages["linearize"], build_linearize)
    architecture = lin_out.result.get("architecture", {})  # stages stored before DeepReDuce have none

    def build_finetune():
        generator = seed_everything(spec.seed, "finetune")
        student = fresh(lin_out.state, architecture)
        checkpoint = store.checkpoint(trial.stages["finetune"], every)
        history = stages.finetune(student, copy.deepcopy(base), splits, spec.finetune, spec.data.batch_size, generator,
                                  checkpoint)
        return cpu_state(student), stage_result(checkpoint, history=history)

    fin_out = store.get_or_build(trial.stages["finetune"], build_finetune)
    final = fresh(fin_out.state, architecture)

    base_acc, final_acc = evaluate(base, splits.test), evaluate(final, splits.test)
    relus = count_relus(final, input_shape)
    base_relus = count_relus(base, input_shape).total
    distance = param_distance(final, base)
    metrics = trial_metrics(final_acc, base_acc, relus.total, base_relus, distance)
    metrics.update(_diagnostics(trial, store, base, final, splits, distance))
    record = {
        "trial_id": trial.id,
        "name": trial.name,
        "values": trial.values,
        "spec": spec.model_dump(mode="json"),
        "stages": {kind: stage.id for kind, stage in trial.stages.items()},
        "trained": {"base": base_out.trained, "linearize": lin_out.trained, "finetune": fin_out.trained},
        # seconds spent waiting for another trial to train a stage this one needs
        "lock_wait_s": {"base": base_out.waited, "linearize": lin_out.waited, "finetune": fin_out.waited},
        "worker": {"host": socket.gethostname(), "pid": os.getpid(), "node": node},
        "timing": {"started": started, "seconds": time.perf_counter() - clock},  # Unix time; this call's seconds
        "metrics": metrics,
        "accuracy": {"base": base_acc.to_json(), "final": final_acc.to_json()},  # GroupMetrics, raw group names
        "group_sizes": splits.group_sizes(),
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "relu_sites": relus.sites,
        "architecture": architecture,  # how the final model is built beyond the spec's model section
        "linearization": lin_out.result.get("selected", {}),  # e.g. DeepReDuce's selected configuration
    }
    write_json_atomic(trial_record_path(store.root, trial.id), record)
    return record


def _diagnostics(trial: Trial, store: StageStore, base: nn.Module, final: nn.Module, splits: Splits,
                 distance: float) -> dict[str, float]:
    """The final model's diagnostics and, against the base model's (measured once per base model and
    stored), the two sides of Theorem 4.4."""
    cfg = trial.spec.diagnostics
    if not (cfg.grad_norms or cfg.margins or cfg.hessian):
        return {}

    def measure_base():
        return {}, diagnose(base, splits.test, cfg, trial.spec.seed).to_json()

    base_diag = Diagnostics.from_json(store.get_or_build(trial.base_diagnostics, measure_base).result)
    final_diag = diagnose(final, splits.test, cfg, trial.spec.seed)
    metrics = {**final_diag.metrics(), **base_diag.metrics("base_")}
    if cfg.bound:
        metrics.update(theorem_bound(base_diag, final_diag, distance))
    return metrics
