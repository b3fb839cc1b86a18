"""Stage recipes: train the base model, linearize it, finetune it. Each takes typed config and
tensors and returns the model plus a per-epoch history; storing and reusing is the sweep's job."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fairsweep.data import Splits
from fairsweep.linearize import Linearized, count_relus, get_linearizer, resolve_budget
from fairsweep.spec import FinetuneConfig, OptimConfig, Spec
from fairsweep.metrics.groups import evaluate
from fairsweep.train.checkpoint import EpochCheckpoint
from fairsweep.train.loop import EpochSummary, make_optimizer, make_scheduler, train
from fairsweep.train.losses import cross_entropy_loss, kd_loss, mean_objective
from fairsweep.train.mitigation import make_mitigation


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
    return fit(model, splits, spec.base, spec.data.batch_size, generator, mean_objective(cross_entropy_loss),
               checkpoint=checkpoint)


def linearize(base: nn.Module, splits: Splits, spec: Spec, generator: torch.Generator,
              checkpoint: EpochCheckpoint | None = None) -> Linearized:
    """Linearize `base` to `spec.linearize.budget` with the configured method."""
    total = count_relus(base, tuple(splits.train.x.shape[1:])).total
    budget = resolve_budget(spec.linearize.budget, total)
    method = get_linearizer(spec.linearize.method)
    return method(base, splits, spec, budget, generator, checkpoint)


def finetune(student: nn.Module, teacher: nn.Module, splits: Splits, cfg: FinetuneConfig, batch_size: int,
             generator: torch.Generator, checkpoint: EpochCheckpoint | None = None) -> list[dict]:
    """KD finetuning of `student` from `teacher` under the mitigation cfg.mitigation with step cfg.mu (see
    `train.mitigation`): `algorithm1` is the paper's Algorithm 1 (fairness-aware), plain KD at µ = 0;
    `released_code` is the authors' released code, CE + T²·KL / C whatever µ (µ moves only the multipliers).
    Batches of cfg.batch_size samples (`batch_size` where cfg sets none). With cfg.from_scratch the
    student's weights are re-initialized (its masks kept) and the base loss is cross-entropy, no teacher.
    """
    teacher.eval()
    mitigation = make_mitigation(cfg.mitigation, cfg.mu, splits.train.group_names, splits.train.y.device)
    if cfg.from_scratch:
        reinitialize(student)
        base_loss = cross_entropy_loss
    else:
        base_loss = kd_loss(teacher, cfg.temperature, kl_over_classes=mitigation.kl_over_classes)
    if checkpoint is not None:
        mitigation.carry(checkpoint)
    return fit(student, splits, cfg, batch_size, generator, mitigation.loss_fn(base_loss), mitigation.after_epoch,
               checkpoint)


@torch.no_grad()
def reinitialize(model: nn.Module) -> None:
    """Fresh weights (from torch's global generator) for every layer that has them; masks stay."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
