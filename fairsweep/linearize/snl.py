"""Selective Network Linearization (Cho et al., 2022).

Every unit gets a trainable gate α (init 1): α·relu(x) + (1−α)·x. Weights and gates train with
Adam on CE + KD from the base model + λ·Σ|α|; after each epoch in which the count of gates above
the threshold did not fall below its lowest so far (as the authors' code compares), λ grows by
`lambda_growth`, but not before epoch `lambda_warmup` (0-based; both SNL codebases wait 5 epochs:
`elif relu_count >= lowest_relu_count and epoch >= 5`). Once the count is at or below the budget,
the `budget` largest gates become ReLUs (mask 1) and the rest identities (mask 0), frozen: masks are
buffers, not parameters.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fairsweep.data import Splits
from fairsweep.errors import StageError
from fairsweep.linearize import Linearized, count_relus, register_linearizer
from fairsweep.models.sites import relu_sites
from fairsweep.train.checkpoint import EpochCheckpoint
from fairsweep.train.loop import EpochSummary, train
from fairsweep.train.losses import kd_loss

SNL_NOT_CONVERGED = (
    "SNL did not reach its budget of {budget} ReLUs within linearize.max_epochs={epochs} epochs "
    "(still {live} live gates, λ={lam:.3g}); raise linearize.max_epochs, linearize.lambda_growth or "
    "linearize.lr."
)


@register_linearizer("snl")
def snl(base: nn.Module, splits: Splits, spec, budget: int, generator: torch.Generator,
        checkpoint: EpochCheckpoint | None = None) -> Linearized:
    cfg = spec.linearize
    teacher = base.eval()
    model = copy.deepcopy(base)
    count_relus(model, tuple(splits.train.x.shape[1:]))  # gives every site its unit shape
    sites = relu_sites(model)
    device = next(model.parameters()).device
    for site in sites.values():
        site.set_gate(torch.ones(site.unit_shape, device=device))
    gates = [site.gate for site in sites.values()]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    lam = cfg.lambda_init
    history: list[dict] = []

    def live_gates() -> int:
        return int(sum((gate > cfg.threshold).sum() for gate in gates))

    kd = kd_loss(teacher, cfg.temperature)  # CE + T²·KL

    def loss_fn(m: nn.Module, x, y, g):
        per_sample = kd(m, x, y)  # (N,)
        l1 = torch.stack([gate.abs().sum() for gate in gates]).sum()
        return per_sample.mean() + lam * l1, per_sample

    lowest = live_gates()

    def on_epoch(summary: EpochSummary) -> bool:
        nonlocal lam, lowest
        live = live_gates()
        history.append({"epoch": summary.epoch, "loss": summary.loss, "lambda": lam, "live_relus": live})
        if live <= budget:
            return True
        if live >= lowest and summary.epoch >= cfg.lambda_warmup:
            lam *= cfg.lambda_growth
        lowest = min(lowest, live)
        return False

    def restore(saved: dict) -> None:
        nonlocal lam, lowest
        lam, lowest = saved["lambda"], saved["lowest"]
        history.extend(saved["history"])

    if checkpoint is not None:  # the gates are parameters of the model: the loop saves them
        checkpoint.carry("snl", lambda: {"lambda": lam, "lowest": lowest, "history": history}, restore)
    train(model, splits.train, loss_fn, optimizer, cfg.max_epochs, spec.data.batch_size, generator, on_epoch=on_epoch,
          checkpoint=checkpoint)
    if history[-1]["live_relus"] > budget:
        raise StageError(SNL_NOT_CONVERGED.format(budget=budget, epochs=cfg.max_epochs,
                                                  live=history[-1]["live_relus"], lam=lam))
    binarize(model, budget)
    return Linearized(model, history)


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
