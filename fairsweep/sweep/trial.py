"""One trial: run the stages it needs through the store, then measure its final model.

Plain Python, no Ray: the Tune trainable, the tests and the benchmarks all call `run_trial`.
"""

from __future__ import annotations

import copy
import hashlib
import os
import socket
import time
from collections.abc import Callable

import torch
from torch import nn

from fairsweep.data import Splits, load_splits
from fairsweep.data.cache import DataCache
from fairsweep.errors import DATA_DIFFERS, NO_GPU, StageError, UserError
from fairsweep.linearize import count_relus
from fairsweep.metrics.diagnostics import Diagnostics, diagnose, theorem_bound
from fairsweep.metrics.groups import evaluate, param_distance, trial_metrics
from fairsweep.models import ModelArgs
from fairsweep.sweep.plan import Stage, Trial, base_model_args
from fairsweep.sweep.records import StageResult, Timing, TrialRecord, Worker, write_trial_record
from fairsweep.sweep.store import StageOutput, StageStore
from fairsweep.train import stages


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(NO_GPU)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def seed_everything(seed: int, salt: str) -> torch.Generator:
    """Reseed torch for one stage; returns the generator of its batch order.

    Every stage reseeds from (seed, stage kind), so it computes the same whether or not the stages
    before it were trained in this process.
    """
    stage_seed = int.from_bytes(hashlib.sha256(f"{seed}/{salt}".encode()).digest()[:4], "little")
    torch.manual_seed(stage_seed)
    return torch.Generator().manual_seed(stage_seed)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def run_trial(trial: Trial, store: StageStore, device: str = "cpu", node: str | None = None,
              watch: Callable[[str, int, dict], None] | None = None, started: float | None = None) -> TrialRecord:
    """Run (or reuse) the trial's stages, measure the final model, write and return the trial record (a trial
    recorded already keeps its record, and this run joins its later attempts). `node` names where it runs
    (a Ray node id) for the record and the stages it trains; `watch(kind, index, row)` is shown each history
    row of the stages it trains as it is made (the live curves); `started`, when the trial started (Unix
    time; default now), is the record's."""
    started, clock = started or time.time(), time.perf_counter()

    def watching(kind: str):
        return None if watch is None else lambda index, row: watch(kind, index, row)

    spec = trial.spec
    every = spec.resources.checkpoint_every
    dev = resolve_device(device)
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")
    splits: Splits = load_splits(spec.data, spec.seed, DataCache(store.data_cache))
    if splits.digest != trial.data_digest:  # e.g. a node of a cluster that sees other files under the same path
        raise StageError(DATA_DIFFERS.format(host=socket.gethostname(), dataset=spec.data.dataset,
                                             ours=splits.digest, planned=trial.data_digest))
    splits = splits.to(dev)
    input_shape = tuple(splits.train.x.shape[1:])
    base_args = base_model_args(spec, len(splits.train.class_names), input_shape[0])

    def model_of(output: StageOutput) -> nn.Module:
        model = ModelArgs.from_json(output.result.model).build()
        model.load_state_dict(output.state)
        return model.to(dev)

    def trained(stage: Stage, model: nn.Module, args: ModelArgs, checkpoint, **result) -> tuple[dict, StageResult]:
        """A trained stage's output: its weights, and its result naming how to rebuild it."""
        resumed = checkpoint.resumed_from if checkpoint is not None and checkpoint.resumed_from else None
        return cpu_state(model), StageResult(model=args.to_json(), resumed_from_epoch=resumed, **result)

    def build_base():
        generator = seed_everything(spec.seed, "base")
        model = base_args.build().to(dev)
        checkpoint = store.checkpoint(trial.stages["base"], every)
        history = stages.train_base(model, splits, spec, generator, checkpoint, watching("base"))
        return trained(trial.stages["base"], model, base_args, checkpoint, history=history)

    stage_seconds: dict[str, float] = {}  # kind -> seconds computing and storing the stages this run trains

    def stored(stage: Stage, build) -> StageOutput:
        clock = time.perf_counter()
        output = store.get_or_build(stage, build, trial=trial.id, node=node)  # stage.json names its trainer
        if output.trained:
            stage_seconds[stage.kind] = time.perf_counter() - clock - output.waited
        return output

    outputs = {"base": stored(trial.stages["base"], build_base)}
    base = model_of(outputs["base"])

    def build_linearize():
        generator = seed_everything(spec.seed, "linearize")
        checkpoint = store.checkpoint(trial.stages["linearize"], every)
        done = stages.linearize(copy.deepcopy(base), base_args, splits, spec, generator, checkpoint,
                                watching("linearize"))
        return trained(trial.stages["linearize"], done.model, done.model_args, checkpoint, history=done.history,
                       relu_count=count_relus(done.model, input_shape).total, selected=done.selected)

    outputs["linearize"] = stored(trial.stages["linearize"], build_linearize)

    if "finetune" in trial.stages:
        def build_finetune():
            generator = seed_everything(spec.seed, "finetune")
            args = ModelArgs.from_json(outputs["linearize"].result.model)
            student = model_of(outputs["linearize"])
            checkpoint = store.checkpoint(trial.stages["finetune"], every)
            history = stages.finetune(student, copy.deepcopy(base), splits, spec.finetune, spec.data.batch_size,
                                      generator, checkpoint, watching("finetune"))
            return trained(trial.stages["finetune"], student, args, checkpoint, history=history)

        outputs["finetune"] = stored(trial.stages["finetune"], build_finetune)
    final_output = outputs[trial.final.kind]
    final = model_of(final_output)

    base_acc, final_acc = evaluate(base, splits.test), evaluate(final, splits.test)
    relus = count_relus(final, input_shape)
    base_relus = count_relus(base, input_shape).total
    distance = param_distance(final, base)
    metrics = trial_metrics(final_acc, base_acc, relus.total, base_relus, distance, splits.train.group_sizes())
    metrics.update(_diagnostics(trial, stored, base, final, splits, distance))
    record = TrialRecord(
        trial_id=trial.id, name=trial.name, values=trial.values, spec=spec.model_dump(mode="json"),
        stages={kind: stage.id for kind, stage in trial.stages.items()},
        trained={kind: out.trained for kind, out in outputs.items()},
        lock_wait_s={kind: out.waited for kind, out in outputs.items()}, stage_seconds=stage_seconds,
        worker=Worker(host=socket.gethostname(), pid=os.getpid(), node=node),
        timing=Timing(started=started, seconds=time.perf_counter() - clock),
        metrics=metrics, accuracy={"base": base_acc, "final": final_acc}, group_sizes=splits.group_sizes(),
        input_shape=list(input_shape), inputs=splits.test.preprocessing(), num_classes=len(splits.train.class_names),
        relu_sites=relus.sites, model=final_output.result.model, linearization=outputs["linearize"].result.selected)
    write_trial_record(store.root, record)
    return record


def _diagnostics(trial: Trial, stored: Callable[[Stage, Callable], StageOutput], base: nn.Module, final: nn.Module,
                 splits: Splits, distance: float) -> dict[str, float]:
    """The final model's diagnostics and, against the base model's (measured once per base model and
    stored), the two sides of Theorem 4.4."""
    cfg = trial.spec.diagnostics
    if not (cfg.grad_norms or cfg.margins or cfg.hessian):
        return {}

    def measure_base():
        return {}, StageResult(diagnostics=diagnose(base, splits.test, cfg, trial.spec.seed).to_json())

    base_diag = Diagnostics.from_json(stored(trial.base_diagnostics, measure_base).result.diagnostics)
    final_diag = diagnose(final, splits.test, cfg, trial.spec.seed)
    metrics = {**final_diag.metrics(), **base_diag.metrics("base_")}
    if cfg.bound:
        metrics.update(theorem_bound(base_diag, final_diag, distance))
    return metrics
