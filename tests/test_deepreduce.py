"""DeepReDuce: configurations against the published ResNet-18 counts, selection by budget, the
configured model's counts, a whole trial, the checks before training, and the paper specs."""

import copy
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT
from fairsweep.errors import UserError
from fairsweep.linearize import count_relus
from fairsweep.linearize.deepreduce import (build_configured, culling_order, enumerate_configurations,
                                            select_configuration)
from fairsweep.spec import Spec, validate_spec
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.preflight import check_plan, model_problems
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial

STAGE1 = ("stem", "stage1")
STAGES12 = STAGE1 + ("stage2",)
STAGES123 = STAGES12 + ("stage3",)
# the published ResNet-18 figures at 32×32 (culling and thinning only)
PUBLISHED = {((), False): 557_056, (STAGE1, False): 229_376, (STAGES12, False): 98_304,
             (STAGES123, False): 32_768, (STAGE1, True): 114_688}


def resnet18_configurations(widths=(1.0,), resolutions=(1.0,)):
    return enumerate_configurations("resnet18", (3, 32, 32), None, list(widths), list(resolutions))


def test_culling_order_puts_the_stem_with_stage1():
    assert culling_order(["stem", "stage1", "stage2"]) == [("stem", "stage1"), ("stage2",)]
    assert culling_order(["stage1", "stage2", "stage3", "final"]) == [("stage1",), ("stage2",), ("stage3",), ("final",)]


def test_resnet18_configurations_have_the_published_counts():
    counts = {(c.culled, c.thinned): c.relu_count for c in resnet18_configurations()}
    assert {k: counts[k] for k in PUBLISHED} == PUBLISHED
    # thinning keeps one ReLU per block: the stem's stays, each stage's halves
    assert counts[((), True)] == 65_536 + (557_056 - 65_536) // 2
    assert len(counts) == 4 * 2  # never all stages culled; thinned or not


@pytest.mark.parametrize("budget,expected", [
    (557_056, ((), False)),
    (300_000, (STAGE1, False)),  # between: the largest at or under it
    (229_376, (STAGE1, False)),  # at
    (229_375, (STAGE1, True)),
    (114_688, (STAGE1, True)),
    (100_000, (STAGES12, False)),
    (98_304, (STAGES12, False)),
    (40_000, (STAGES123, False)),
    (32_768, (STAGES123, False)),
])
def test_a_budget_selects_the_largest_configuration_at_or_under_it(budget, expected):
    chosen = select_configuration(resnet18_configurations(), budget)
    assert (chosen.culled, chosen.thinned) == expected and chosen.relu_count <= budget


def test_a_budget_below_the_smallest_configuration_selects_none():
    smallest = min(c.relu_count for c in resnet18_configurations())
    assert smallest == 16_384  # stages 1-3 culled, stage 4 thinned
    assert select_configuration(resnet18_configurations(), smallest - 1) is None


def test_reshaping_scales_the_counts_exactly():
    configs = {(c.culled, c.thinned, c.width_factor, c.resolution_factor): c for c in
               resnet18_configurations(widths=(1.0, 0.5), resolutions=(1.0, 0.5))}
    for (culled, thinned), count in PUBLISHED.items():
        assert configs[(culled, thinned, 0.5, 1.0)].relu_count == count // 2  # half the channels
        assert configs[(culled, thinned, 1.0, 0.5)].relu_count == count // 4  # half the height and width
        assert configs[(culled, thinned, 0.5, 0.5)].relu_count == count // 8
    assert configs[((), False, 0.5, 1.0)].width == 32
    # a tie goes to the least reshaped: α = 0.5 with stage 1 culled also has 114,688 ReLUs
    chosen = select_configuration(list(configs.values()), 114_688)
    assert (chosen.culled, chosen.thinned, chosen.width_factor) == (STAGE1, True, 1.0)


def test_resnet18_without_the_stem_relu_culls_its_stages_from_stage1():
    configs = enumerate_configurations("resnet18", (3, 32, 32), None, [1.0], [1.0], {"stem_relu": False})
    counts = {(c.culled, c.thinned): c.relu_count for c in configs}
    # no stem site: culling starts at stage 1 alone; the counts are the published ones less the stem's 65,536
    # where the stem is not culled, and the same where it is
    assert counts == {((), False): 491_520, (("stage1",), False): 229_376, (("stage1", "stage2"), False): 98_304,
                      (("stage1", "stage2", "stage3"), False): 32_768, ((), True): 491_520 // 2,
                      (("stage1",), True): 114_688, (("stage1", "stage2"), True): 49_152,
                      (("stage1", "stage2", "stage3"), True): 16_384}
    config = select_configuration(configs, 114_688)
    model = build_configured("resnet18", 10, (3, 32, 32), config, {"stem_relu": False})
    count = count_relus(model, (3, 32, 32))
    assert count.total == config.relu_count == 114_688 and "stem" not in count.stages and count.stages["stage1"] == 0


def test_vgg_has_no_thinning_and_wrn_culls_its_stages():
    vgg = enumerate_configurations("vgg19", (3, 32, 32), None, [1.0], [1.0, 0.5])
    assert not any(c.thinned for c in vgg) and {c.resolution_factor for c in vgg} == {1.0}  # 16×16 is too small
    assert sorted(c.relu_count for c in vgg)[-2:] == [303_104 - 131_072, 303_104]
    wrn = enumerate_configurations("wrn22_8", (3, 32, 32), None, [1.0], [1.0])
    assert {c.culled for c in wrn} == {(), ("stage1",), ("stage1", "stage2"), ("stage1", "stage2", "stage3")}


@pytest.mark.parametrize("budget", [229_376, 114_688, 20_000])
def test_the_configured_model_counts_what_its_configuration_says(budget):
    configs = resnet18_configurations(widths=(1.0, 0.5), resolutions=(1.0, 0.5))
    config = select_configuration(configs, budget)
    model = build_configured("resnet18", 10, (3, 32, 32), config)
    count = count_relus(model, (3, 32, 32))
    assert count.total == config.relu_count
    assert all(count.stages[s] == 0 for s in config.culled)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def dr_raw(tiny_raw, budget):
    tiny_raw["linearize"] = {"method": "deepreduce", "budget": budget,
                             "deepreduce": {"epochs": 2, "lr": 0.05, "width_factors": [1.0, 0.5]}}
    return tiny_raw


def test_a_deepreduce_trial_records_its_configuration_and_is_deterministic(tmp_path, tiny_raw):
    # small_cnn width 4 at 8×8: relu1 256, relu2 512, relu3 256 ReLUs; at α = 0.5, half of each.
    # 400 selects α = 0.5 with relu1 culled: 256 + 128 = 384
    trial = make_plan(validate_spec(dr_raw(tiny_raw, 400))).trials[0]
    torch.set_num_threads(1)
    record = run_trial(trial, StageStore(tmp_path / "a"))
    chosen = record.linearization
    assert chosen == {"culled": "relu1", "thinned": False, "width_factor": 0.5, "resolution_factor": 1.0,
                      "width": 2, "relu_count": 384}
    assert record.model["options"] == {"width": 2, "resolution": 1.0}
    assert record.metrics["relu_count"] == 384 and record.relu_sites["relu1"] == 0
    assert record.metrics["relu_fraction"] == 384 / 1024
    again = run_trial(trial, StageStore(tmp_path / "b"))
    assert again.metrics == record.metrics


def test_deepreduce_options_are_no_part_of_an_snl_stage_identity(tiny_raw):
    snl = make_plan(validate_spec(tiny_raw)).trials[0].stages["linearize"].id
    tiny_raw["linearize"]["deepreduce"] = {"epochs": 7}
    assert make_plan(validate_spec(tiny_raw)).trials[0].stages["linearize"].id == snl
    dr = make_plan(validate_spec(dr_raw(copy.deepcopy(tiny_raw), 400))).trials[0].stages["linearize"].id
    tiny_raw = dr_raw(tiny_raw, 400)
    tiny_raw["linearize"]["deepreduce"]["epochs"] = 3
    assert make_plan(validate_spec(tiny_raw)).trials[0].stages["linearize"].id != dr


def plan_problems(raw) -> str:
    with pytest.raises(UserError) as info:
        check_plan(make_plan(validate_spec(raw)), None)
    return " ".join(" ".join(info.value.problems).split())


def test_a_deepreduce_budget_below_the_smallest_configuration_is_an_error(tiny_raw):
    # smallest: α = 0.5, ρ = 0.5 (4×4 inputs), relu1 and relu2 culled: relu3's 8·2·2 = 32; largest: the whole model
    text = plan_problems(dr_raw(tiny_raw, 20))
    assert "`linearize.budget`: DeepReDuce's configurations of small_cnn at input 1×8×8 have 32 to 1024 ReLUs" in text
    assert "budget 20 (20 ReLUs) is below the smallest; feasible budgets are 32 to 1024" in text
    check_plan(make_plan(validate_spec(dr_raw(tiny_raw, 32))), None)  # the smallest itself is feasible


@pytest.mark.parametrize("mutate,expect", [
    (lambda r: r["model"].update(arch="vgg19", width=None),
     "`model.arch`: vgg19 cannot take the inputs of dataset `digits` (1×8×8 per sample)"),
    (lambda r: r["linearize"].update(budget=2000), "budget must be > 0 and at most the model's 1024 ReLUs"),
    (lambda r: r["linearize"].update(method="deepreduce", budget=2000), "at most the model's 1024 ReLUs"),
])
def test_bad_model_or_budget_is_an_error_before_training(tiny_raw, mutate, expect):
    mutate(tiny_raw)
    assert expect in plan_problems(tiny_raw)


def test_cli_rejects_an_infeasible_deepreduce_budget_with_status_2(tmp_path, tiny_raw):
    from test_spec import cli, write

    result = cli("run", str(write(tmp_path, dr_raw(tiny_raw, 10))), "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 2 and "feasible budgets are 32 to 1024" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


DR_SPECS = sorted((ROOT / "sweeps" / "paper").glob("*_dr.yaml"))  # all paper specs: tests/test_real_data.py


@pytest.mark.parametrize("path", DR_SPECS, ids=lambda p: p.stem)
def test_paper_specs_models_and_budgets_are_valid_at_32x32(path: Path):
    raw = yaml.safe_load(path.read_text())
    raw["data"] = {}  # the real datasets' section is checked below where they are registered
    spec = Spec.model_validate(raw)
    assert spec.model.arch == "resnet18" and spec.model.stem_relu is None  # the stem ReLU DeepReDuce's counts have
    cache: dict = {}
    for trial in make_plan(spec).trials:
        assert model_problems(trial.spec, (3, 32, 32), 10, "linearize.budget", cache) == []
    assert spec.linearize.method == "deepreduce"
    assert spec.base.epochs == spec.linearize.deepreduce.epochs == 200
    configs = resnet18_configurations(spec.linearize.deepreduce.width_factors,
                                      spec.linearize.deepreduce.resolution_factors)
    chosen = {b: select_configuration(configs, b).relu_count for b in spec.sweep.grid["linearize.budget"]}
    assert all(chosen[b] == b for b in chosen)  # each budget is a published configuration's count


def test_deepreduce_training_is_the_finetuning_step_that_mu_drives(tmp_path, tiny_raw):
    """Algorithm 1 replaces DeepReDuce's own KD training (the paper: "replacing the standard finetuning step
    of SNL and DR"): a DR trial has no finetune stage unless asked, µ is part of its linearize stage, and
    its Figure 9 twin is the same trial at µ = 0."""
    from fairsweep.sweep.driver import plain_kd_twin

    plain = make_plan(validate_spec(dr_raw(copy.deepcopy(tiny_raw), 400))).trials[0]
    assert list(plain.stages) == ["base", "linearize"] and plain.final is plain.stages["linearize"]
    raw = dr_raw(copy.deepcopy(tiny_raw), 400)
    raw["finetune"]["mu"] = 0.5
    mitigated = make_plan(validate_spec(raw)).trials[0]
    assert mitigated.stages["base"].id == plain.stages["base"].id
    assert mitigated.stages["linearize"].id != plain.stages["linearize"].id
    assert plain_kd_twin(mitigated).id == plain.id and plain_kd_twin(plain) is None
    raw["linearize"]["deepreduce"]["finetune"] = True  # the extra finetune stage, as asked
    assert list(make_plan(validate_spec(raw)).trials[0].stages) == ["base", "linearize", "finetune"]

    raw["diagnostics"] = {"grad_norms": False, "margins": False, "hessian": False, "bound": False}
    tiny_raw = dr_raw(tiny_raw, 400)
    tiny_raw["diagnostics"] = raw["diagnostics"]
    torch.set_num_threads(1)
    store = StageStore(tmp_path)
    run_trial(make_plan(validate_spec(tiny_raw)).trials[0], store)
    raw["linearize"]["deepreduce"]["finetune"] = False
    record = run_trial(make_plan(validate_spec(raw)).trials[0], store)
    assert record.trained == {"base": False, "linearize": True}  # the base model is shared
    history = store.result(mitigated.stages["linearize"]).history
    assert history[-1]["multiplier/0"] > 0  # Algorithm 1's multipliers grew inside DeepReDuce's training
    zero = store.result(plain.stages["linearize"]).history
    assert all(row["multiplier/0"] == 0 for row in zero) and zero[-1]["loss"] != history[-1]["loss"]
