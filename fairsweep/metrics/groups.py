"""Per-group accuracy as one value (after fairlearn's MetricFrame) and the trial's metric dict."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GroupMetrics:
    """A metric overall and for every group present in the evaluated data."""

    overall: float
    by_group: dict[str, float]
    counts: dict[str, int]

    def difference(self) -> float:
        """max − min over groups."""
        return max(self.by_group.values()) - min(self.by_group.values())

    def group_min(self) -> float:
        return min(self.by_group.values())

    def group_max(self) -> float:
        return max(self.by_group.values())


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

    return group_accuracy(predict(model, data.x).argmax(1), data.y, data.g, data.group_names)


def safe_key(name: str) -> str:
    """A group name usable in an MLflow metric key (letters, digits, `_ - . /`)."""
    return re.sub(r"[^A-Za-z0-9_\-./]", "_", name)


def drop_pct(base: float, final: float) -> float:
    """(base − final) / base × 100; NaN where the base model got none of the group right."""
    return (base - final) / base * 100.0 if base > 0 else math.nan


def trial_metrics(final: GroupMetrics, base: GroupMetrics, relu_count: int, base_relu_count: int,
                  param_dist: float) -> dict[str, float]:
    """The DESIGN.md metrics of a trial's final model against the same seed's base model."""
    out: dict[str, float] = {"acc": final.overall}
    drops = {}
    for name, acc in final.by_group.items():
        key = safe_key(name)
        out[f"group_acc/{key}"] = acc
        drops[name] = drop_pct(base.by_group[name], acc)
        out[f"group_drop_pct/{key}"] = drops[name]
    finite = [d for d in drops.values() if not math.isnan(d)]
    out["drop_gap_pct"] = max(finite) - min(finite) if finite else math.nan
    out["acc_gap"] = final.difference()
    out["worst_group_acc"] = final.group_min()
    out["relu_count"] = float(relu_count)
    out["relu_fraction"] = relu_count / base_relu_count
    out["param_dist"] = param_dist
    return out


def param_distance(final: torch.nn.Module, base: torch.nn.Module) -> float:
    """‖θ̃ − θ‖₂ over the parameters the two models share (gates and masks are not parameters θ; a
    DeepReDuce model reshaped to another width shares only the parameters whose shapes did not change)."""
    base_params = dict(base.named_parameters())
    sq = sum(float((p.detach() - base_params[n].detach()).pow(2).sum())
             for n, p in final.named_parameters() if n in base_params and base_params[n].shape == p.shape)
    return math.sqrt(sq)
