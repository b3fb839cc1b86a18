"""Fairness-aware finetuning: the paper's Algorithm 1 whole, and the variant its released code runs.

A mitigation holds one Lagrange multiplier λ_a per group, all zero at the start. For every batch
it turns the batch's per-sample losses (N,) and groups (N,) into the objective the optimizer
minimizes; after every epoch it steps the multipliers by µ times the epoch's constraint
violations. It plugs into the training loop as its loss function (`loss_fn(base_loss)`, for any
per-sample base loss: the finetuning's KD, DeepReDuce's, cross-entropy) and its `after_epoch`, and
registers its state with an epoch checkpoint (`carry`), so that a resumed finetuning equals an
uninterrupted one. Per-group losses are segment sums over the batch's one forward pass, never a
forward per group.

`finetune.mitigation` names the mode:

- `algorithm1` (`Algorithm1`): the paper's Algorithm 1. The batch objective is L + Σ_a λ_a·|L − L_a|
  over the groups present in the batch, the penalty with gradient; after each epoch
  λ_a ← λ_a + µ·|L(S) − L_a(S)|. With every multiplier zero (µ = 0) it is the plain mean exactly.
- `released_code` (`ReleasedCode`): what the authors' released code computes (`SoftTarget(T,
  mitigate=True)` and `train_kd_mitigate` in SNLCode/utils.py, the epoch loop of
  SNLCode/snl_finetune_mitigate.py). It departs from Algorithm 1 in three ways:
  (a) the penalty is detached: it adds to the objective's value, never to its gradient, so µ changes
      the multipliers and not the trained weights;
  (b) its KD term is averaged over the classes as well as the samples, T²·KL / C (`kl_div` with
      `reduction='none'`, then `.mean()`), so its finetuning distils with kl_over_classes="mean";
  (c) the multipliers grow by µ × the sum, over the epoch's batches, of each batch's violation;
  and a group with a single sample in a batch counts, like an absent group, no violation in that batch.
  The released code's groups are the class labels; here they are the data's group attribute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fairsweep.train.checkpoint import EpochCheckpoint
from fairsweep.train.loop import EpochSummary, LossFn
from fairsweep.train.losses import KlOverClasses, PerSampleLoss, group_means, kd_per_sample


def fairness_penalty(per_sample: torch.Tensor, groups: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """Σ_a λ_a·|L − L_a| over the groups present in the batch (Algorithm 1's inner objective term):
    (N,) losses, (N,) groups, (G,) multipliers -> ().

    It carries gradient: detaching it would silently turn the mitigation into plain KD.
    """
    overall = per_sample.mean()
    by_group, counts = group_means(per_sample, groups, multipliers.numel())  # (G,), (G,)
    violation = (overall - by_group).abs() * (counts > 0)  # (G,) absent groups: 0
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
    """Algorithm 1's objective over the KD losses of (N, C) logits, and the per-sample KD losses (N,)."""
    per_sample = kd_per_sample(student, teacher, y, temperature)
    return fair_objective(per_sample, groups, multipliers), per_sample


class Mitigation:
    """One mode's multipliers, batch objective and epoch update; the modes are the subclasses."""

    kl_over_classes: KlOverClasses = "sum"  # how the KD that this mode's finetuning distils with reduces

    def __init__(self, mu: float, group_names: Sequence[str], device: torch.device | str = "cpu"):
        self.mu = mu
        self.group_names = tuple(group_names)
        self.multipliers = torch.zeros(len(self.group_names), device=device)  # (G,) λ_a

    def objective(self, per_sample: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """The objective () to minimize over a training batch's per-sample losses (N,) and groups (N,).
        Called once per training batch, in order: a mode may accumulate what its epoch update needs."""
        raise NotImplementedError

    def after_epoch(self, summary: EpochSummary) -> dict[str, float]:
        """Step the multipliers at the end of an epoch; returns the history entries `multiplier/<group>`."""
        raise NotImplementedError

    def loss_fn(self, base_loss: PerSampleLoss) -> LossFn:
        """The training loop's loss function: this mitigation's objective over `base_loss`."""

        def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor):
            per_sample = base_loss(model, x, y)  # (N,)
            return self.objective(per_sample, g), per_sample

        return loss_fn

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All that the next epoch depends on, on the CPU (for an epoch checkpoint)."""
        return {"multipliers": self.multipliers.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.multipliers.copy_(state["multipliers"])

    def carry(self, checkpoint: EpochCheckpoint) -> None:
        """Save this mitigation's state with every checkpoint of `checkpoint`, and restore it on resume."""
        checkpoint.carry("mitigation", self.state_dict, self.load_state_dict)

    def _step(self, violation: torch.Tensor) -> dict[str, float]:
        """λ ← λ + µ·violation, (G,) on the multipliers' device."""
        self.multipliers.add_(self.mu * violation)
        return {f"multiplier/{name}": float(v) for name, v in zip(self.group_names, self.multipliers)}


class Algorithm1(Mitigation):
    """The paper's Algorithm 1. The epoch's violations |L(S) − L_a(S)| come from the training loop's
    epoch summary: the per-sample losses averaged over the epoch's batches (the model moves during
    the epoch; no extra pass over S is made). A group absent from the epoch has no violation."""

    def objective(self, per_sample: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return fair_objective(per_sample, groups, self.multipliers)

    def after_epoch(self, summary: EpochSummary) -> dict[str, float]:
        device = self.multipliers.device
        present = (summary.group_count > 0).to(device)  # (G,)
        return self._step((summary.loss - summary.group_loss.to(device)).abs() * present)


class ReleasedCode(Mitigation):
    """The released code's mitigation, departures (a)-(c) of the module docstring included. The batch
    loss L and the group losses L_a are the means of the base loss, which its finetuning makes
    CE + T²·KL / C; the objective is L + Σ_a λ_a·|L − L_a| with the penalty detached."""

    kl_over_classes: KlOverClasses = "mean"  # (b): KD / C

    def __init__(self, mu: float, group_names: Sequence[str], device: torch.device | str = "cpu"):
        super().__init__(mu, group_names, device)
        self.violation_sum = torch.zeros_like(self.multipliers)  # (G,) Σ over this epoch's batches of |L − L_a|

    def objective(self, per_sample: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        overall = per_sample.mean()  # () L: the gradient the optimizer gets is this mean's alone
        with torch.no_grad():  # (a): the released code rebuilds the penalty with torch.tensor(...).detach()
            by_group, counts = group_means(per_sample, groups, self.multipliers.numel())  # (G,), (G,)
            # its group index `(targets == g).nonzero().squeeze()` is 0-d for a single sample, and it
            # skips such a group like an absent one
            violation = (by_group - overall).abs() * (counts > 1)  # (G,)
            self.violation_sum += violation
        if bool(self.multipliers.any()):
            return overall + (self.multipliers * violation).sum()
        return overall

    def after_epoch(self, summary: EpochSummary) -> dict[str, float]:
        history = self._step(self.violation_sum)  # (c): µ × the sum of the batches' violations
        self.violation_sum.zero_()
        return history

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "violation_sum": self.violation_sum.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.violation_sum.copy_(state["violation_sum"])


MITIGATIONS: dict[str, type[Mitigation]] = {"algorithm1": Algorithm1, "released_code": ReleasedCode}


def make_mitigation(mode: str, mu: float, group_names: Sequence[str],
                    device: torch.device | str = "cpu") -> Mitigation:
    """The mitigation `mode` (`finetune.mitigation`) with multiplier step `mu`, its multipliers zero."""
    return MITIGATIONS[mode](mu, group_names, device)
