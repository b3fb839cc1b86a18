"""The plan's order: trials next to each other (run side by side) differ in their earliest stage where
the grid allows, so that one rarely waits for a stage the other is training."""

from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import make_plan


def test_keys_of_earlier_stages_vary_faster_whatever_the_grid_order(tiny_raw):
    tiny_raw["sweep"] = {"grid": {"finetune.mu": [0.0, 0.01], "linearize.budget": [0.03, 0.1],
                                  "base.lr": [0.05, 0.1], "seed": [0, 1]}}
    trials = make_plan(validate_spec(tiny_raw)).trials
    assert [(t.values["seed"], t.values["base.lr"]) for t in trials[:4]] == [(0, 0.05), (1, 0.05), (0, 0.1),
                                                                              (1, 0.1)]
    assert len({t.stages["base"].id for t in trials[:4]}) == 4  # four side by side: four different base models
    assert [t.values["linearize.budget"] for t in trials[:8]] == [0.03] * 4 + [0.1] * 4
    assert [t.values["finetune.mu"] for t in trials] == [0.0] * 8 + [0.01] * 8
