"""Stage recipes: train the base model, linearize it, finetune it. Each takes typed config and
tensors and returns the model plus a per-epoch history; storing and reusing is the sweep's job.

`StageTrainer` is the training layer's side of one stage (its data, generator and epoch checkpoint);
a linearization method trains through it (the `Trainer` protocol of `fairsweep.linearize`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fairsweep.data import Splits
from fairsweep.linearize import Linearized, LossFn, count_relus, get_linearizer, resolve_budget
from fairsweep.models import ModelArgs
from fairsweep.spec import FinetuneConfig, OptimConfig, Spec
from fairsweep.train.checkpoint import EpochCheckpoint
from fairsweep.train.loop import EpochSummary, accuracy, make_optimizer, make_scheduler, train
from fairsweep.train.losses import PerSampleLoss, cross_entropy_loss, kd_loss, mean_objective
from fairsweep.train.mitigation import make_mitigation


Watch = Callable[[int, dict], None]  # (index, row): each row of a stage's history as it is made


class StageTrainer:
    """One stage's training: its splits, the generator of its random draws, its epoch checkpoint (or
    None), the batch size of recipes that set none, the fairness-aware finetuning that KD training
    runs under (`finetune`: µ and the mitigation mode; None: plain KD), and who watches its history
    rows as they are made (`watch`: the live curves; None: nobody)."""

    def __init__(self, data: Splits, generator: torch.Generator, checkpoint: EpochCheckpoint | None,
                 batch_size: int, finetune: FinetuneConfig | None = None, watch: Watch | None = None):
        self.data, self.generator, self.checkpoint = data, generator, checkpoint
        self.batch_size, self.finetune, self.watch = batch_size, finetune, watch

    def record(self, history: list[dict], row: dict) -> None:
        """Add an epoch's `row` to the stage's `history`, and show it to the watcher."""
        history.append(row)
        if self.watch is not None:
            self.watch(len(history) - 1, row)

    def kd(self, teacher: nn.Module, temperature: float) -> PerSampleLoss:
        return kd_loss(teacher, temperature)  # CE + T²·KL

    def carry(self, name: str, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        if self.checkpoint is not None:
            self.checkpoint.carry(name, get, put)

    def loop(self, model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, max_epochs: int,
             batch_size: int | None, on_epoch: Callable[[EpochSummary], bool | None]) -> int:
        return train(model, self.data.train, loss_fn, optimizer, max_epochs, batch_size or self.batch_size,
                     self.generator, None, on_epoch, self.checkpoint)

    def fit(self, model: nn.Module, cfg: OptimConfig, loss_fn: LossFn,
            after_epoch: Callable[[EpochSummary], dict] | None = None) -> list[dict]:
        """Train with `cfg`'s optimizer, schedule and batch size; keep the best-validation or the last
        epoch's weights. Returns the per-epoch history (loss, val_acc, and what `after_epoch` adds)."""
        optimizer = make_optimizer(model.parameters(), cfg)
        history: list[dict] = []
        best = {"val_acc": -1.0, "state": None}

        def restore(saved: dict) -> None:
            history.extend(saved["history"])
            best.update(saved["best"])

        self.carry("fit", lambda: {"history": history, "best": best}, restore)

        def on_epoch(summary: EpochSummary) -> None:
            record = {"epoch": summary.epoch, "loss": summary.loss, "val_acc": accuracy(model, self.data.val)}
            if after_epoch is not None:
                record.update(after_epoch(summary))
            self.record(history, record)
            if cfg.select == "best_val" and record["val_acc"] > best["val_acc"]:
                best.update(val_acc=record["val_acc"], state=copy.deepcopy(model.state_dict()))

        train(model, self.data.train, loss_fn, optimizer, cfg.epochs, cfg.batch_size or self.batch_size,
              self.generator, make_scheduler(optimizer, cfg), on_epoch, self.checkpoint)
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        return history

    def mitigated_fit(self, model: nn.Module, cfg: OptimConfig, base_loss: Callable[[str], PerSampleLoss]
                      ) -> list[dict]:
        """`fit` under the fairness-aware finetuning (see `train.mitigation`): `base_loss(kl_over_classes)`
        makes the per-sample loss, as the mitigation mode asks its KL to reduce over the classes."""
        mode, mu = (self.finetune.mitigation, self.finetune.mu) if self.finetune else ("algorithm1", 0.0)
        mitigation = make_mitigation(mode, mu, self.data.train.group_names, self.data.train.y.device)
        if self.checkpoint is not None:
            mitigation.carry(self.checkpoint)
        return self.fit(model, cfg, mitigation.loss_fn(base_loss(mitigation.kl_over_classes)), mitigation.after_epoch)

    def distill(self, model: nn.Module, teacher: nn.Module, recipe: OptimConfig, temperature: float,
                ce_weight: float, kd_weight: float) -> list[dict]:
        teacher.eval()
        return self.mitigated_fit(model, recipe, lambda kl_over_classes: kd_loss(
            teacher, temperature, ce_weight=ce_weight, kd_weight=kd_weight, kl_over_classes=kl_over_classes))


def train_base(model: nn.Module, splits: Splits, spec: Spec, generator: torch.Generator,
               checkpoint: EpochCheckpoint | None = None, watch: Watch | None = None) -> list[dict]:
    """Train `model` from scratch with cross-entropy."""
    trainer = StageTrainer(splits, generator, checkpoint, spec.data.batch_size, watch=watch)
    return trainer.fit(model, spec.base, mean_objective(cross_entropy_loss))


def linearize(base: nn.Module, base_args: ModelArgs, splits: Splits, spec: Spec, generator: torch.Generator,
              checkpoint: EpochCheckpoint | None = None, watch: Watch | None = None) -> Linearized:
    """Linearize `base` (built from `base_args`) to `spec.linearize.budget` with the configured method; a
    method that distils (DeepReDuce) does so under the spec's fairness-aware finetuning."""
    total = count_relus(base, tuple(splits.train.x.shape[1:])).total
    return run_linearizer(base, base_args, splits, spec, resolve_budget(spec.linearize.budget, total), generator,
                          checkpoint, watch)


def run_linearizer(base: nn.Module, base_args: ModelArgs, splits: Splits, spec: Spec, budget: int,
                   generator: torch.Generator, checkpoint: EpochCheckpoint | None = None,
                   watch: Watch | None = None) -> Linearized:
    """`spec.linearize.method` with its own options on `base`, to `budget` ReLUs (a count)."""
    trainer = StageTrainer(splits, generator, checkpoint, spec.data.batch_size, spec.finetune, watch)
    return get_linearizer(spec.linearize.method)(base, base_args, spec.linearize.options, budget, trainer)


def finetune(student: nn.Module, teacher: nn.Module, splits: Splits, cfg: FinetuneConfig, batch_size: int,
             generator: torch.Generator, checkpoint: EpochCheckpoint | None = None,
             watch: Watch | None = None) -> list[dict]:
    """KD finetuning of `student` from `teacher` under the mitigation cfg.mitigation with step cfg.mu (see
    `train.mitigation`): `algorithm1` is the paper's Algorithm 1 (fairness-aware), plain KD at µ = 0;
    `released_code` is the authors' released code, CE + T²·KL / C whatever µ (µ moves only the multipliers).
    Batches of cfg.batch_size samples (`batch_size` where cfg sets none). With cfg.from_scratch the
    student's weights are re-initialized (its masks kept) and the base loss is cross-entropy, no teacher.
    """
    teacher.eval()
    trainer = StageTrainer(splits, generator, checkpoint, batch_size, cfg, watch)
    if cfg.from_scratch:
        reinitialize(student)
        return trainer.mitigated_fit(student, cfg, lambda kl_over_classes: cross_entropy_loss)
    return trainer.distill(student, teacher, cfg, cfg.temperature, ce_weight=1.0, kd_weight=1.0)


@torch.no_grad()
def reinitialize(model: nn.Module) -> None:
    """Fresh weights (from torch's global generator) for every layer that has them; masks stay."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
