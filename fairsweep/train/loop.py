"""The one training loop. Data lives on the device as tensors; batches are index slices, turned into
model inputs (uint8 images: augmented and normalised) by the data, with tensor ops."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fairsweep.data import GroupedData
from fairsweep.errors import StageError
from fairsweep.linearize import LossFn  # (model, x, y, g) -> (objective, per-sample loss (N,) the summary averages)
from fairsweep.train.checkpoint import EpochCheckpoint

DIVERGED = ("training diverged: the mean loss of epoch {epoch} is {loss}; lower the stage's learning rate "
            "(for a fairness-aware finetuning, also finetune.mu)")



@dataclass(frozen=True)
class EpochSummary:
    epoch: int  # 0-based
    loss: float  # mean per-sample loss over the epoch's training samples
    group_loss: torch.Tensor  # (G,) mean per-sample loss of each group over the epoch (0 if absent)
    group_count: torch.Tensor  # (G,) samples of each group seen in the epoch


def train(model: nn.Module, data: GroupedData, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
          epochs: int, batch_size: int, generator: torch.Generator,
          scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
          on_epoch: Callable[[EpochSummary], bool | None] | None = None,
          checkpoint: EpochCheckpoint | None = None) -> int:
    """Run up to `epochs` epochs; `on_epoch` returning True stops early. Returns the epochs run.
    With `checkpoint`, training starts from its last save (if any) and saves after each epoch."""
    n, num_groups = len(data), len(data.group_names)
    counts = torch.bincount(data.g, minlength=num_groups)  # (G,) samples of each group per epoch
    start = checkpoint.restore(model, optimizer, scheduler, generator) if checkpoint is not None else 0
    for epoch in range(start, epochs):
        model.train()
        loss_sum = torch.zeros(num_groups, device=data.y.device)  # (G,) per-sample loss sums
        for index in torch.randperm(n, generator=generator).to(data.y.device).split(batch_size):
            x, y, g = data.inputs(index, generator), data.y[index], data.g[index]
            objective, per_sample = loss_fn(model, x, y, g)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            loss_sum.index_add_(0, g, per_sample.detach())
        if scheduler is not None:
            scheduler.step()
        summary = EpochSummary(epoch, float(loss_sum.sum() / n), (loss_sum / counts.clamp(min=1)).cpu(), counts.cpu())
        if not math.isfinite(summary.loss):  # never store a NaN model as a finished stage
            raise StageError(DIVERGED.format(epoch=epoch + 1, loss=summary.loss))
        if on_epoch is not None and on_epoch(summary):
            return epoch + 1
        if checkpoint is not None:
            checkpoint.save(epoch + 1, model, optimizer, scheduler, generator)
    return epochs


@torch.no_grad()
def predict(model: nn.Module, data: GroupedData, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, C) of every sample of `data` in eval mode (normalised, never augmented)."""
    was_training = model.training
    model.eval()
    index = torch.arange(len(data), device=data.y.device)
    logits = torch.cat([model(data.inputs(chunk)) for chunk in index.split(batch_size)])
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, data: GroupedData) -> float:
    """The fraction of `data` that `model` classifies right (eval mode, no gradients)."""
    return float((predict(model, data).argmax(1) == data.y).to(torch.float64).mean())


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_every, gamma=cfg.step_gamma)
    return None
