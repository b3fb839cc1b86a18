"""Per-group accuracy as one value (after fairlearn's MetricFrame) and the trial's metric dict."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class GroupMetrics:
    """A metric overall and for every group present in the evaluated data."""

    overall: float
    by_group: dict[str, float]
    counts: dict[str, int]

    def to_json(self) -> dict:
        return asdict(self)

    def difference(self) -> float:
        """max − min over groups."""
        return max(self.by_group.values()) - min(self.by_group.values())

    def group_min(self) -> float:
        return min(self.by_group.values())

    def group_max(self) -> float:
        return max(self.by_group.values())

    def worst_group(self, higher_is_better: bool = True) -> str:
        """The name of the group with the lowest value (the highest, where lower is better)."""
        pick = min if higher_is_better else max
        return pick(self.by_group, key=self.by_group.__getitem__)

    def keyed(self, prefix: str) -> dict[str, float]:
        """`{prefix}/<g>` → value for every group, with MLflow-safe group names."""
        return {f"{prefix}/{safe_key(name)}": value for name, value in self.by_group.items()}


def group_accuracy(pred: torch.Tensor, y: torch.Tensor, g: torch.Tensor, group_names: tuple[str, ...]) -> GroupMetrics:
    """Accuracy overall and per group, from (N,) predictions, targets and groups, by bincount."""
    correct = (pred == y).to(torch.float64)
    hits = torch.bincount(g, weights=correct, minlength=len(group_names))
    counts = torch.bincount(g, minlength=len(group_names))
    by_group = {name: float(hits[i] / counts[i]) for i, name in enumerate(group_names) if counts[i] > 0}
    return GroupMetrics(float(correct.mean()), by_group,
                        {name: int(counts[i]) for i, name in enumerate(group_names) if counts[i] > 0})


def evaluate(model: torch.nn.Module, data) -> GroupMetrics:
    """Accuracy of `model` on a `GroupedData`, overall and per group (eval mode, no gradients)."""
    from fairsweep.train.loop import predict

    return group_accuracy(predict(model, data).argmax(1), data.y, data.g, data.group_names)


def safe_key(name: str) -> str:
    """A group name usable in an MLflow metric key (letters, digits, `_ - . /`)."""
    return re.sub(r"[^A-Za-z0-9_\-./]", "_", name)


def drop_pct(base: float, final: float) -> float:
    """(base − final) / base × 100; NaN where the base model got none of the group right."""
    return (base - final) / base * 100.0 if base > 0 else math.nan


def trial_metrics(final: GroupMetrics, base: GroupMetrics, relu_count: int, base_relu_count: int,
                  param_dist: float) -> dict[str, float]:
    """The DESIGN.md metrics of a trial's final model against the same seed's base model."""
    drops = relative_drop(base, final)
    finite = [d for d in drops.by_group.values() if not math.isnan(d)]
    return {
        "acc": final.overall,
        **final.keyed("group_acc"),
        **drops.keyed("group_drop_pct"),
        "drop_gap_pct": max(finite) - min(finite) if finite else math.nan,
        "acc_gap": final.difference(),
        "worst_group_acc": final.group_min(),
        "relu_count": float(relu_count),
        "relu_fraction": relu_count / base_relu_count,
        "param_dist": param_dist,
    }


def relative_drop(reference: GroupMetrics, other: GroupMetrics) -> GroupMetrics:
    """Per group (reference − other) / reference × 100, the paper's relative drop in accuracy: against the
    base model for linearization (Figure 6), against the plain-KD model for mitigation (Figure 9)."""
    by_group = {name: drop_pct(reference.by_group[name], value) for name, value in other.by_group.items()}
    return GroupMetrics(drop_pct(reference.overall, other.overall), by_group, other.counts)


def param_distance(final: torch.nn.Module, base: torch.nn.Module) -> float:
    """‖θ̃ − θ‖₂ over the parameters the two models share (gates and masks are not parameters θ; a
    DeepReDuce model reshaped to another width shares only the parameters whose shapes did not change)."""
    base_params = dict(base.named_parameters())
    sq = sum(float((p.detach() - base_params[n].detach()).pow(2).sum())
             for n, p in final.named_parameters() if n in base_params and base_params[n].shape == p.shape)
    return math.sqrt(sq)
