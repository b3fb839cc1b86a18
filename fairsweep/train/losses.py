"""Losses over one forward pass: CE, knowledge distillation, and the fairness-constrained KD of
Algorithm 1. Per-group quantities are segment reductions over the batch, never a forward per group."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_per_sample(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """CE(student, y) + T²·KL(teacher/T ‖ student/T), one value per sample: (N, C) logits -> (N,).

    The KL is Hinton's (teacher distribution first), as in the SNL and DeepReDuce code.
    """
    t = temperature
    ce = F.cross_entropy(student, y, reduction="none")
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                  reduction="none", log_target=True).sum(dim=1)
    return ce + (t * t) * kl


def group_means(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of `values` (N,) within each group: (G,) means (0 where a group is absent) and (G,) counts."""
    sums = values.new_zeros(num_groups).index_add(0, groups, values)
    counts = torch.bincount(groups, minlength=num_groups)
    return sums / counts.clamp(min=1).to(values.dtype), counts


def fairness_penalty(per_sample: torch.Tensor, groups: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """Σ_a λ_a·|L − L_a| over the groups present in the batch (Algorithm 1's inner objective term).

    It carries gradient: detaching it would silently turn the mitigation into plain KD.
    """
    overall = per_sample.mean()
    by_group, counts = group_means(per_sample, groups, multipliers.numel())
    violation = (overall - by_group).abs() * (counts > 0)
    return (multipliers * violation).sum()


def fair_objective(per_sample: torch.Tensor, groups: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's batch objective L + Σ_a λ_a·|L − L_a| from the per-sample losses (N,).

    With all multipliers zero the penalty is skipped, so the objective is the plain mean exactly.
    """
    objective = per_sample.mean()
    if bool(multipliers.any()):
        objective = objective + fairness_penalty(per_sample, groups, multipliers)
    return objective


def fair_kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, groups: torch.Tensor,
                 multipliers: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1's objective over the KD losses, and the per-sample KD losses (N,)."""
    per_sample = kd_per_sample(student, teacher, y, temperature)
    return fair_objective(per_sample, groups, multipliers), per_sample
