"""Stage recipes: train the base model, linearize it, finetune it. Each takes typed config and
tensors and returns the model plus a per-epoch history; storing and reusing is the sweep's job."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fairsweep.data import Splits
from fairsweep.linearize import Linearized, count_relus, get_linearizer, resolve_budget
from fairsweep.spec import FinetuneConfig, OptimConfig, Spec
from fairsweep.metrics.groups import evaluate
from fairsweep.train.checkpoint import EpochCheckpoint
from fairsweep.train.loop import EpochSummary, make_optimizer, make_scheduler, train
from fairsweep.train.losses import fair_objective, kd_per_sample


def fit(model: nn.Module, splits: Splits, cfg: OptimConfig, batch_size: int, generator: torch.Generator,
         loss_fn, after_epoch=None, checkpoint: EpochCheckpoint | None = None) -> list[dict]:
    """Train with `cfg`'s optimizer, schedule and batch size (`batch_size` where cfg sets none); keep the
    best-validation or the last epoch's weights."""
    optimizer = make_optimizer(model.parameters(), cfg)
    history: list[dict] = []
    best = {"val_acc": -1.0, "state": None}

    def restore(saved: dict) -> None:
        history.extend(saved["history"])
        best.update(saved["best"])

    if checkpoint is not None:
        checkpoint.carry("fit", lambda: {"history": history, "best": best}, restore)

    def on_epoch(summary: EpochSummary) -> None:
        record = {"epoch": summary.epoch, "loss": summary.loss, "val_acc": evaluate(model, splits.val).overall}
        if after_epoch is not None:
            record.update(after_epoch(summary))
        history.append(record)
        if cfg.select == "best_val" and record["val_acc"] > best["val_acc"]:
            best.update(val_acc=record["val_acc"], state=copy.deepcopy(model.state_dict()))

    train(model, splits.train, loss_fn, optimizer, cfg.epochs, cfg.batch_size or batch_size, generator,
          make_scheduler(optimizer, cfg), on_epoch, checkpoint)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return history


def train_base(model: nn.Module, splits: Splits, spec: Spec, generator: torch.Generator,
               checkpoint: EpochCheckpoint | None = None) -> list[dict]:
    """Train `model` from scratch with cross-entropy."""

    def loss_fn(m, x, y, g):
        per_sample = F.cross_entropy(m(x), y, reduction="none")
        return per_sample.mean(), per_sample

    return fit(model, splits, spec.base, spec.data.batch_size, generator, loss_fn, checkpoint=checkpoint)


def linearize(base: nn.Module, splits: Splits, spec: Spec, generator: torch.Generator,
              checkpoint: EpochCheckpoint | None = None) -> Linearized:
    """Linearize `base` to `spec.linearize.budget` with the configured method."""
    total = count_relus(base, tuple(splits.train.x.shape[1:])).total
    budget = resolve_budget(spec.linearize.budget, total)
    method = get_linearizer(spec.linearize.method)
    return method(base, splits, spec, budget, generator, checkpoint)


def finetune(student: nn.Module, teacher: nn.Module, splits: Splits, cfg: FinetuneConfig, batch_size: int,
             generator: torch.Generator, checkpoint: EpochCheckpoint | None = None) -> list[dict]:
    """KD finetuning of `student` from `teacher`; with cfg.mu > 0, Algorithm 1 (fairness-aware).
    Batches of cfg.batch_size samples (`batch_size` where cfg sets none). With cfg.from_scratch the
    student's weights are re-initialized (its masks kept) and the loss is cross-entropy, no teacher.

    Multipliers start at zero, one per group; after each epoch
    λ_a ← λ_a + µ·|L(S) − L_a(S)|, where L(S) and L_a(S) are the per-sample losses averaged
    over the epoch's batches (the model moves during the epoch; no extra pass over S is made).
    """
    teacher.eval()
    names = splits.train.group_names
    multipliers = torch.zeros(len(names), device=splits.train.y.device)
    if cfg.from_scratch:
        reinitialize(student)
    if checkpoint is not None:
        checkpoint.carry("multipliers", lambda: multipliers.cpu(), lambda saved: multipliers.copy_(saved))

    def loss_fn(m, x, y, g):
        logits = m(x)
        if cfg.from_scratch:
            per_sample = F.cross_entropy(logits, y, reduction="none")
        else:
            with torch.no_grad():
                teacher_logits = teacher(x)
            per_sample = kd_per_sample(logits, teacher_logits, y, cfg.temperature)
        return fair_objective(per_sample, g, multipliers), per_sample

    def update_multipliers(summary: EpochSummary) -> dict:
        present = (summary.group_count > 0).to(multipliers.device)
        violation = (summary.loss - summary.group_loss.to(multipliers.device)).abs() * present
        multipliers.add_(cfg.mu * violation)
        return {f"multiplier/{name}": float(v) for name, v in zip(names, multipliers)}

    return fit(student, splits, cfg, batch_size, generator, loss_fn, update_multipliers, checkpoint)


@torch.no_grad()
def reinitialize(model: nn.Module) -> None:
    """Fresh weights (from torch's global generator) for every layer that has them; masks stay."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
