"""Per-sample losses over one forward pass: cross-entropy and knowledge distillation (KD).

Every training stage takes its KD loss from `kd_loss`, so SNL, DeepReDuce and the finetuning
distill the same way and differ only in the weights they give the two terms. A loss is per sample
(N,), so that the training loop can average it per group and a mitigation (`train.mitigation`) can
build a fairness-constrained objective on top of any of them. Per-group quantities are segment
reductions over the batch (`group_means`), never a forward per group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

# (model, x (N, ...) model inputs, y (N,) targets) -> (N,) loss of each sample, with gradient
PerSampleLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

# How the KL term reduces over the C classes: "sum" is the KL divergence (torch's `batchmean`);
# "mean" divides it by C, as `reduction='none'` followed by `.mean()` does in the paper's released
# mitigation code.
KlOverClasses = Literal["sum", "mean"]


def kd_per_sample(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, temperature: float,
                  ce_weight: float = 1.0, kd_weight: float = 1.0,
                  kl_over_classes: KlOverClasses = "sum") -> torch.Tensor:
    """ce_weight·CE(student, y) + kd_weight·T²·KL(teacher/T ‖ student/T), one value per sample:
    (N, C) logits -> (N,). With kl_over_classes="mean" the KL is divided by the C classes.

    The KL is Hinton's (teacher distribution first), as in the SNL and DeepReDuce code.
    """
    t = temperature
    ce = F.cross_entropy(student, y, reduction="none")  # (N,) nats
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                  reduction="none", log_target=True).sum(dim=1)  # (N, C) -> (N,) nats
    if kl_over_classes == "mean":
        kl = kl / student.shape[1]
    if ce_weight != 1.0:  # a weight of 1 multiplies nothing, so the unweighted KD keeps its exact values
        ce = ce_weight * ce
    return ce + (kd_weight * t * t) * kl


def kd_loss(teacher: nn.Module, temperature: float, ce_weight: float = 1.0, kd_weight: float = 1.0,
            kl_over_classes: KlOverClasses = "sum") -> PerSampleLoss:
    """The KD loss of a student `model` distilled from `teacher` (in the mode the caller left it in):
    `kd_per_sample` of the student's and the teacher's logits, the teacher run without gradient.

    SNL and the finetuning use CE + T²·KL (the weights' defaults); DeepReDuce's published recipe is
    0.5·CE + 0.5·T²·KL.
    """

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x)  # (N, C)
        return kd_per_sample(model(x), teacher_logits, y, temperature, ce_weight, kd_weight, kl_over_classes)

    return loss


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample (N,): the base model's loss, and a from-scratch finetuning's."""
    return F.cross_entropy(model(x), y, reduction="none")


def group_means(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of `values` (N,) within each group: (G,) means (0 where a group is absent) and (G,) counts."""
    sums = values.new_zeros(num_groups).index_add(0, groups, values)
    counts = torch.bincount(groups, minlength=num_groups)
    return sums / counts.clamp(min=1).to(values.dtype), counts


def mean_objective(base_loss: PerSampleLoss):
    """The training loop's loss function for an unconstrained objective: the batch mean of `base_loss`."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor):
        per_sample = base_loss(model, x, y)  # (N,)
        return per_sample.mean(), per_sample

    return loss_fn
