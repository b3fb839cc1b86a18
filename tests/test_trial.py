"""A trial end to end without Ray: stage reuse and determinism (same spec and seed, same metrics)."""

import math

import torch

from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial


def test_same_spec_same_seed_same_metrics_and_stage_reuse(tmp_path, tiny_raw):
    tiny_raw["sweep"] = {"grid": {"finetune.mu": [0.0, 0.01]}}
    plan = make_plan(validate_spec(tiny_raw))
    torch.set_num_threads(1)
    first = run_trial(plan.trials[0], StageStore(tmp_path / "a"))
    again = run_trial(plan.trials[0], StageStore(tmp_path / "b"))  # fresh store: trains everything again
    assert first.trained == again.trained == {"base": True, "linearize": True, "finetune": True}
    assert first.metrics == again.metrics
    # the second µ shares base and linearization
    other = run_trial(plan.trials[1], StageStore(tmp_path / "a"))
    assert other.trained == {"base": False, "linearize": False, "finetune": True}
    # a reused stage gives the same result as a freshly trained one
    reused = run_trial(plan.trials[1], StageStore(tmp_path / "b"))
    assert reused.metrics == other.metrics
    m = first.metrics
    assert m["relu_count"] <= round(0.05 * 1024) and m["relu_fraction"] == m["relu_count"] / 1024
    assert set(first.group_sizes) == {"train", "val", "test"} and 0 <= m["acc"] <= 1
    # the paper's diagnostics of every group; the base model's measured once and shared
    groups = [str(d) for d in range(10)]
    for key in ("group_grad_norm", "group_margin", "group_hessian_eig", "bound", "excess_loss",
                "base_group_grad_norm", "base_group_hessian_eig"):
        assert all(math.isfinite(m[f"{key}/{g}"]) for g in groups), key
    assert 0 <= m["bound_holds_frac"] <= 1
    assert StageStore(tmp_path / "a").has(plan.trials[0].base_diagnostics)
    assert plan.trials[0].base_diagnostics.id == plan.trials[1].base_diagnostics.id
    assert {k: v for k, v in other.metrics.items() if k.startswith("base_")} == \
        {k: v for k, v in m.items() if k.startswith("base_")}
