"""A trial end to end without Ray: stage reuse and determinism (same spec and seed, same metrics); its record
when damaged, or written again by another driver."""

import io
import json
import math
import re

import pytest
import torch
from rich.console import Console

from fairsweep.errors import DamagedFileWarning
from fairsweep.spec import validate_spec
from fairsweep.sweep.driver import SweepDriver
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.progress import Progress
from fairsweep.sweep.records import read_trial_record, trial_record_path, update_trial_metrics
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


NO_DIAGNOSTICS = {"grad_norms": False, "margins": False, "hessian": False, "bound": False}


def test_a_truncated_trial_record_is_moved_aside_and_the_trial_measured_again(tmp_path, tiny_raw):
    tiny_raw["diagnostics"] = NO_DIAGNOSTICS
    trial, store = make_plan(validate_spec(tiny_raw)).trials[0], StageStore(tmp_path)
    torch.set_num_threads(1)
    uninterrupted = run_trial(trial, store)
    path = trial_record_path(tmp_path, trial.id)
    cut = path.read_bytes()[: path.stat().st_size // 2]  # what a power loss mid-write left
    path.write_bytes(cut)
    with pytest.warns(DamagedFileWarning, match=re.escape(f"{path} cannot be read")):
        assert read_trial_record(tmp_path, trial.id) is None  # not finished: the driver runs it (it used to raise)
    [moved] = (tmp_path / "damaged" / "trials").iterdir()
    assert moved.name.startswith(path.name + ".") and moved.read_bytes() == cut
    again = run_trial(trial, store)
    assert again.trained == {kind: False for kind in trial.stages}  # its stages come from the store
    assert again.metrics == uninterrupted.metrics
    assert repr(read_trial_record(tmp_path, trial.id).metrics) == repr(again.metrics)  # (NaN is no NaN's equal)


def test_a_second_driver_finishing_a_trial_adds_its_attempt_and_keeps_the_first(tmp_path, tiny_raw):
    """Two drivers sharing a storage, each running the trial (nodes "a" and "b"): the record keeps the first
    run's measurement and provenance, the second's where, when and what it trained, and the second driver
    counts its own run's stages (none trained)."""
    tiny_raw["diagnostics"] = NO_DIAGNOSTICS
    plan = make_plan(validate_spec(tiny_raw))
    trial, store = plan.trials[0], StageStore(tmp_path)
    torch.set_num_threads(1)
    first = run_trial(trial, store, node="a")
    second = run_trial(trial, store, node="b")
    assert second.trained == {kind: False for kind in trial.stages} and second.worker.node == "b"
    # how long each stage took, timed by the worker that trained it; a reused one took it no time of its own
    assert set(first.stage_seconds) == set(trial.stages) and second.stage_seconds == {}
    assert all(0 < s < first.timing.seconds for s in first.stage_seconds.values())
    assert sum(first.stage_seconds.values()) <= first.timing.seconds
    stored = read_trial_record(tmp_path, trial.id)
    assert stored.worker.node == "a" and stored.timing == first.timing and stored.trained == first.trained
    assert stored.later_attempts == [second.attempt()]
    for stage in trial.stages.values():  # every stage names the run that trained it
        assert json.loads((store.path(stage) / "stage.json").read_text())["trained_by"]["node"] == "a"
    update_trial_metrics(tmp_path, trial.id, {"extra": 1.0})  # the driver's late metrics keep every attempt
    assert read_trial_record(tmp_path, trial.id).later_attempts == [second.attempt()]

    class NoTracking:
        def log_trial(self, parent_id, trial, record, storage):
            return "run"

    driver = SweepDriver(plan.spec, plan, tmp_path, NoTracking(), "parent", {})
    driver.progress = Progress(1, console=Console(file=io.StringIO()))
    driver.completed(trial.id)
    assert driver.outcome.trained == {"base": 0, "linearize": 0, "finetune": 0}
