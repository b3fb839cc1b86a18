"""The plan's disk footprint (`fairsweep validate`'s storage line) against the files real trials store."""

import pytest
import torch

from fairsweep.spec import validate_spec
from fairsweep.sweep.footprint import RESULT_BYTES, human_bytes, plan_footprint
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial

NO_DIAGNOSTICS = {"grad_norms": False, "margins": False, "hessian": False, "bound": False}
DIGITS = ((1, 8, 8), 10)  # one digit's input shape, the classes


def linearized_by(tiny_raw, method):
    tiny_raw["diagnostics"] = NO_DIAGNOSTICS
    tiny_raw["base"]["epochs"] = 1
    tiny_raw["finetune"]["epochs"] = 1
    if method == "random":
        tiny_raw["linearize"] = {"method": "random", "budget": 0.3}
    elif method == "deepreduce":  # α = 0.5 with relu1 culled (tests/test_deepreduce.py): a smaller model
        tiny_raw["linearize"] = {"method": "deepreduce", "budget": 400,
                                 "deepreduce": {"epochs": 1, "lr": 0.05, "width_factors": [1.0, 0.5]}}
    else:
        tiny_raw["linearize"]["snl"]["max_epochs"] = 8
    return tiny_raw


@pytest.mark.parametrize("method", ["snl", "random", "deepreduce"])
def test_each_stage_is_sized_as_the_trial_stores_it(tmp_path, tiny_raw, method):
    plan = make_plan(validate_spec(linearized_by(tiny_raw, method)))
    trial, store = plan.trials[0], StageStore(tmp_path)
    torch.set_num_threads(1)
    run_trial(trial, store)
    stored = {kind: (store.path(stage) / "model.pt").stat().st_size for kind, stage in trial.stages.items()}
    footprint = plan_footprint(plan, lambda spec: DIGITS)
    assert footprint.stages == {kind: [size] for kind, size in stored.items()}
    assert footprint.finals == [stored[trial.final.kind]]
    if method == "deepreduce":  # the configured model is thinner than the base one
        assert stored["linearize"] < stored["base"]
    else:  # the masks: one float per ReLU of the base model
        assert stored["linearize"] > stored["base"]


def test_a_grid_counts_each_unique_stage_once(tiny_raw):
    tiny_raw["sweep"] = {"grid": {"seed": [0, 1], "linearize.budget": [0.05, 0.1], "finetune.mu": [0.0, 0.01]}}
    footprint = plan_footprint(make_plan(validate_spec(tiny_raw)), lambda spec: DIGITS)
    assert {kind: len(sizes) for kind, sizes in footprint.stages.items()} == {"base": 2, "linearize": 4, "finetune": 8}
    assert len(footprint.finals) == 8
    base, linearized = footprint.stages["base"][0], footprint.stages["finetune"][0]
    assert footprint.total == 2 * base + 12 * linearized + 14 * RESULT_BYTES
    assert "storage: about" in footprint.line() and "2 base ×" in footprint.line()
    assert "in MLflow adds" in footprint.line("all") and "at most" in footprint.line("front")
    assert "no copy" in footprint.line("none")


def test_human_bytes():
    assert [human_bytes(n) for n in (999, 1000, 1536, 45_000_000, 36e9, 4e12)] == [
        "999 B", "1.0 KB", "1.5 KB", "45.0 MB", "36.0 GB", "4000.0 GB"]
