"""The plan's order: trials next to each other (run side by side) differ in their earliest stage where
the grid allows, so that one rarely waits for a stage the other is training. And what its trials (and
the driver's records of them) share is held once."""

from fairsweep.data import ContentDigests
from fairsweep.metrics.values import GroupMetrics
from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import Trial, make_plan
from fairsweep.sweep.records import Timing, TrialRecord, Worker
from fairsweep.sweep.shared import Shared


def test_keys_of_earlier_stages_vary_faster_whatever_the_grid_order(tiny_raw):
    tiny_raw["sweep"] = {"grid": {"finetune.mu": [0.0, 0.01], "linearize.budget": [0.03, 0.1],
                                  "base.lr": [0.05, 0.1], "seed": [0, 1]}}
    trials = make_plan(validate_spec(tiny_raw)).trials
    assert [(t.values["seed"], t.values["base.lr"]) for t in trials[:4]] == [(0, 0.05), (1, 0.05), (0, 0.1),
                                                                              (1, 0.1)]
    assert len({t.stages["base"].id for t in trials[:4]}) == 4  # four side by side: four different base models
    assert [t.values["linearize.budget"] for t in trials[:8]] == [0.03] * 4 + [0.1] * 4
    assert [t.values["finetune.mu"] for t in trials] == [0.0] * 8 + [0.01] * 8


def test_a_plans_trials_hold_their_equal_sections_and_stages_once_and_are_what_they_are_alone(tiny_raw):
    """The oracle: each trial built alone (no pool). The plan's are equal to those, share what is equal."""
    tiny_raw["sweep"] = {"grid": {"seed": [0, 1], "linearize.budget": [0.03, 0.1], "finetune.mu": [0.0, 0.01]}}
    spec = validate_spec(tiny_raw)
    digests = ContentDigests()
    trials = make_plan(spec, digests).trials
    alone = [Trial.of(spec, trial.values, digests) for trial in trials]
    assert [t.id for t in trials] == [t.id for t in alone]
    assert [t.spec for t in trials] == [t.spec for t in alone]
    assert [{k: s.id for k, s in t.stages.items()} for t in trials] == [
        {k: s.id for k, s in t.stages.items()} for t in alone]
    first, other_mu = trials[0], next(t for t in trials if t.values["finetune.mu"] != trials[0].values["finetune.mu"])
    assert first.spec.model is other_mu.spec.model and first.spec.data is other_mu.spec.data
    assert first.spec.finetune is not other_mu.spec.finetune and first.spec.finetune != other_mu.spec.finetune
    same_base = [t for t in trials if t.values["seed"] == first.values["seed"]]
    assert len(same_base) == 4 and len({id(t.stages["base"]) for t in same_base}) == 1
    assert len({id(t.stages["base"]) for t in trials}) == 2 and len({id(t.stages["finetune"]) for t in trials}) == 8
    assert len({id(t.stages["linearize"]) for t in trials}) == 4
    assert first.base_diagnostics is same_base[-1].base_diagnostics
    assert alone[0].stages["base"] is not alone[1].stages["base"]  # alone, nothing is shared


def test_records_held_by_the_driver_share_equal_parts_and_keep_their_own_metrics(tiny_raw):
    tiny_raw["sweep"] = {"grid": {"finetune.mu": [0.0, 0.01]}}
    trials = make_plan(validate_spec(tiny_raw)).trials
    shared = Shared()
    originals = [record_of(t) for t in trials]
    kept = [shared.record(r, name=f"name-{i}") for i, r in enumerate(originals)]
    assert [r.model_copy(update={"name": o.name}) for r, o in zip(kept, originals)] == originals
    assert [r.name for r in kept] == ["name-0", "name-1"]
    assert kept[0].spec["model"] is kept[1].spec["model"] and kept[0].spec["finetune"] != kept[1].spec["finetune"]
    assert kept[0].group_sizes is kept[1].group_sizes and kept[0].accuracy["base"] is kept[1].accuracy["base"]
    kept[0].metrics["mitigation_drop_pct"] = 1.0  # Figure 9's effects update one trial's metrics in place
    assert "mitigation_drop_pct" not in kept[1].metrics and "mitigation_drop_pct" not in originals[0].metrics


def record_of(trial) -> TrialRecord:
    """A record as the trial's worker writes it (its numbers made up)."""
    accuracy = GroupMetrics(0.9, {"0": 0.95, "1": 0.85}, {"0": 20, "1": 5})
    return TrialRecord(
        trial_id=trial.id, name=trial.name, values=trial.values, spec=trial.spec.model_dump(mode="json"),
        stages={kind: stage.id for kind, stage in trial.stages.items()}, trained={k: True for k in trial.stages},
        lock_wait_s={k: 0.0 for k in trial.stages}, worker=Worker(host="here", pid=1),
        timing=Timing(started=1e9, seconds=42.0), metrics={"acc": 0.9, "worst_group_acc": 0.85},
        accuracy={"base": accuracy, "final": GroupMetrics(0.8, {"0": 0.9, "1": 0.5}, {"0": 20, "1": 5})},
        group_sizes={"train": {"0": 80, "1": 20}, "val": {"0": 10, "1": 3}, "test": {"0": 20, "1": 5}},
        input_shape=[1, 8, 8], num_classes=10, relu_sites={}, model={})
