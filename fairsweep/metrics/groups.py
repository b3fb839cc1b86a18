"""Per-group accuracy of a model on the data: `group_accuracy` by bincount, `evaluate`, and the distance
between two models' parameters. The values and the metric dict are in `metrics.values`."""

from __future__ import annotations

import math

import torch

from fairsweep.metrics.values import (GroupMetrics, drop_pct, kind_means, minority_groups,  # noqa: F401
                                      relative_drop, safe_key, trial_metrics)
from fairsweep.train.loop import predict


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
    return group_accuracy(predict(model, data).argmax(1), data.y, data.g, data.group_names)


def param_distance(final: torch.nn.Module, base: torch.nn.Module) -> float:
    """‖θ̃ − θ‖₂ over the parameters the two models share (gates and masks are not parameters θ; a
    DeepReDuce model reshaped to another width shares only the parameters whose shapes did not change)."""
    base_params = dict(base.named_parameters())
    sq = sum(float((p.detach() - base_params[n].detach()).pow(2).sum())
             for n, p in final.named_parameters() if n in base_params and base_params[n].shape == p.shape)
    return math.sqrt(sq)
