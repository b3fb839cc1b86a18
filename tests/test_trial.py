"""A trial end to end without Ray: stage reuse and determinism (same spec and seed, same metrics)."""

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
    assert first["trained"] == again["trained"] == {"base": True, "linearize": True, "finetune": True}
    assert first["metrics"] == again["metrics"]
    # the second µ shares base and linearization
    other = run_trial(plan.trials[1], StageStore(tmp_path / "a"))
    assert other["trained"] == {"base": False, "linearize": False, "finetune": True}
    # a reused stage gives the same result as a freshly trained one
    reused = run_trial(plan.trials[1], StageStore(tmp_path / "b"))
    assert reused["metrics"] == other["metrics"]
    m = first["metrics"]
    assert m["relu_count"] <= round(0.05 * 1024) and m["relu_fraction"] == m["relu_count"] / 1024
    assert set(first["group_sizes"]) == {"train", "val", "test"} and 0 <= m["acc"] <= 1
