"""The paper's Figure 9: what a fairness-aware finetuning changes against plain KD at the same seed and
budget — the relative accuracy drop of the mitigated model against the plain-KD model, overall and
per group, (acc_plainKD − acc) / acc_plainKD × 100; negative where the mitigation helped."""

from __future__ import annotations

from fairsweep.metrics.values import GroupMetrics, relative_drop


def mitigation_metrics(plain_kd: GroupMetrics, mitigated: GroupMetrics) -> dict[str, float]:
    """`mitigation_drop_pct` and `mitigation_drop_pct/<g>` of a mitigated model's test accuracy against its
    plain-KD twin's."""
    drop = relative_drop(plain_kd, mitigated)
    return {"mitigation_drop_pct": drop.overall, **drop.keyed("mitigation_drop_pct")}
