"""Group metrics: one value type, the metric names of DESIGN.md (a contract), and their computation."""

from fairsweep.metrics.groups import GroupMetrics, group_accuracy, safe_key, trial_metrics

__all__ = ["GroupMetrics", "group_accuracy", "safe_key", "trial_metrics"]
