"""Selective Network Linearization (Cho et al., 2022).

Every unit gets a trainable gate α (init 1): α·relu(x) + (1−α)·x. Weights and gates train with
Adam on CE + KD from the base model + λ·Σ|α|; after each epoch in which the count of gates above
the threshold did not fall below its lowest so far (as the authors' code compares), λ grows by
`lambda_growth` — not before epoch `lambda_warmup` (the authors' warm-up: `epoch >= 5`). Once the
count is at or below the budget, the `budget` largest gates become ReLUs (mask 1) and the rest
identities (mask 0), frozen: masks are buffers, not parameters.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fairsweep.errors import SNL_NOT_CONVERGED, StageError
from fairsweep.linearize import Linearized, Trainer, count_relus, register_linearizer
from fairsweep.models import ModelArgs
from fairsweep.models.sites import relu_sites


class LambdaSchedule:
    """λ and the lowest live count so far; `step(epoch, live)` applies the authors' rule after an epoch."""

    def __init__(self, lambda_init: float, growth: float, warmup: int, start_count: int):
        self.value, self.growth, self.warmup, self.lowest = lambda_init, growth, warmup, start_count

    def step(self, epoch: int, live: int) -> None:
        """After 0-based `epoch` with `live` gates: a new lowest count is kept; otherwise λ grows, from the
        warm-up's end on."""
        if live < self.lowest:
            self.lowest = live
        elif epoch >= self.warmup:
            self.value *= self.growth


@register_linearizer("snl")
def snl(base: nn.Module, base_args: ModelArgs, cfg, budget: int, trainer: Trainer) -> Linearized:
    """`cfg` is `linearize.snl` (SNLConfig)."""
    teacher = base.eval()
    model = copy.deepcopy(base)
    count_relus(model, tuple(trainer.data.train.x.shape[1:]))  # gives every site its unit shape
    sites = relu_sites(model)
    device = next(model.parameters()).device
    for site in sites.values():
        site.set_gate(torch.ones(site.unit_shape, device=device))
    gates = [site.gate for site in sites.values()]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []

    def live_gates() -> int:
        return int(sum((gate > cfg.threshold).sum() for gate in gates))

    schedule = LambdaSchedule(cfg.lambda_init, cfg.lambda_growth, cfg.lambda_warmup, live_gates())
    kd = trainer.kd(teacher, cfg.temperature)  # CE + T²·KL

    def loss_fn(m: nn.Module, x, y, g):
        per_sample = kd(m, x, y)  # (N,)
        l1 = torch.stack([gate.abs().sum() for gate in gates]).sum()
        return per_sample.mean() + schedule.value * l1, per_sample

    def on_epoch(summary) -> bool:
        live = live_gates()
        trainer.record(history, {"epoch": summary.epoch, "loss": summary.loss, "lambda": schedule.value,
                                 "live_relus": live})
        if live <= budget:
            return True
        schedule.step(summary.epoch, live)
        return False

    def restore(saved: dict) -> None:
        schedule.value, schedule.lowest = saved["lambda"], saved["lowest"]
        history.extend(saved["history"])

    # the gates are parameters of the model, which the loop's checkpoints hold
    trainer.carry("snl", lambda: {"lambda": schedule.value, "lowest": schedule.lowest, "history": history}, restore)
    trainer.loop(model, loss_fn, optimizer, cfg.max_epochs, cfg.batch_size, on_epoch)
    if history[-1]["live_relus"] > budget:
        raise StageError(SNL_NOT_CONVERGED.format(budget=budget, epochs=cfg.max_epochs,
                                                  live=history[-1]["live_relus"], lam=schedule.value))
    binarize(model, budget)
    return Linearized(model, base_args, history)


@torch.no_grad()
def binarize(model: nn.Module, budget: int) -> None:
    """Replace gates by masks that keep the `budget` largest gates as ReLUs."""
    sites = relu_sites(model)
    flat = torch.cat([site.gate.flatten() for site in sites.values()])
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat, min(budget, flat.numel())).indices] = 1.0
    offset = 0
    for site in sites.values():
        n = site.gate.numel()
        mask = keep[offset:offset + n].view_as(site.gate)
        offset += n
        site.set_gate(None)
        site.set_mask(mask)
