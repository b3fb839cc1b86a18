"""Random linearization: keep a seeded random `budget` of the units, spread over the sites in
proportion to their sizes (largest remainders), and make the others identities.

No training and no teacher: the control that a data-driven method (SNL) is compared with, and the
paper's Figure 2 model ("half of the ReLU activations replaced with linear activations"), which the
finetune stage then trains from scratch (`finetune.from_scratch`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fairsweep.linearize import Linearized, Trainer, count_relus, register_linearizer
from fairsweep.models import ModelArgs
from fairsweep.models.sites import relu_sites


def proportional_counts(sizes: list[int], budget: int) -> list[int]:
    """Split `budget` over parts of `sizes` in proportion, by largest remainders: the counts sum to
    min(budget, sum(sizes)) exactly and each is at most its part's size."""
    total = sum(sizes)
    budget = min(budget, total)
    shares = [budget * s / total for s in sizes]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[:budget - sum(counts)]:
        counts[i] += 1
    return counts


@register_linearizer("random")
@torch.no_grad()
def random_units(base: nn.Module, base_args: ModelArgs, cfg, budget: int, trainer: Trainer) -> Linearized:
    """`cfg` is `linearize.random` (no options); the units come from the stage's generator."""
    model = copy.deepcopy(base)
    count_relus(model, tuple(trainer.data.train.x.shape[1:]))  # gives every site its unit shape
    sites = relu_sites(model)
    sizes = [int(torch.Size(site.unit_shape).numel()) for site in sites.values()]
    device = next(model.parameters()).device
    for site, size, keep in zip(sites.values(), sizes, proportional_counts(sizes, budget)):
        mask = torch.zeros(size)
        mask[torch.randperm(size, generator=trainer.generator)[:keep]] = 1.0
        site.set_mask(mask.view(site.unit_shape).to(device))
    return Linearized(model, base_args, [{"epoch": 0, "live_relus": min(budget, sum(sizes))}])
