"""Group metrics: the values (`values`: GroupMetrics, the trial's metric dict — the names in docs/metrics.md
are a contract), their computation on a model (`groups`), the paper's diagnostics (`diagnostics`) and
Figure 9's mitigation metric (`mitigation`)."""
