"""ReLU sites, exact counting, masks through save/load, and SNL reaching its budget."""

import copy
import io

import pytest
import torch

from fairsweep.data import load_splits
from fairsweep.linearize import count_relus, resolve_budget
from fairsweep.linearize.snl import binarize
from fairsweep.models import ModelArgs, create_model, list_models, relu_sites
from fairsweep.spec import validate_spec
from fairsweep.train.stages import run_linearizer

# one input shape per registered architecture (the registry-driven tests fail on a missing one)
INPUTS = {"small_cnn": (1, 8, 8), "mlp": (2,), "resnet18": (3, 32, 32), "resnet34": (3, 32, 32),
          "vgg19": (3, 32, 32), "wrn22_8": (3, 32, 32)}


@pytest.mark.parametrize("name", list_models())
def test_every_model_counts_its_relus_as_the_sum_over_sites(name):
    model = create_model(name, num_classes=10, in_channels=INPUTS[name][0])
    count = count_relus(model, INPUTS[name])
    assert count.total == sum(count.sites.values()) > 0
    assert model(torch.zeros(2, *INPUTS[name])).shape == (2, 10)


def test_small_cnn_exact_count():
    # 16·8·8 + 32·8·8 + 64·4·4 at width 16, 8×8 input
    count = count_relus(create_model("small_cnn", 10, 1, width=16), (1, 8, 8))
    assert count.sites == {"relu1": 1024, "relu2": 2048, "relu3": 1024} and count.total == 4096
    assert count_relus(create_model("small_cnn", 10, 1, width=16), (1, 16, 16)).total == 4 * 4096


def test_budget_fraction_and_absolute():
    assert resolve_budget(0.05, 4096) == 205 and resolve_budget(300, 4096) == 300 and resolve_budget(1e-9, 10) == 1


@pytest.mark.parametrize("name", list_models())
def test_masks_count_live_units_and_survive_save_load(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_channels=INPUTS[name][0])
    count_relus(model, INPUTS[name])
    live = 0
    for site in relu_sites(model).values():
        mask = (torch.rand(site.unit_shape) < 0.3).float()
        site.set_mask(mask)
        live += int(mask.sum())
    assert count_relus(model, INPUTS[name]).total == live
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = create_model(name, num_classes=3, in_channels=INPUTS[name][0])
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert count_relus(fresh, INPUTS[name]).total == live
    x = torch.randn(2, *INPUTS[name])
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_site_semantics_against_the_formula():
    site = relu_sites(create_model("mlp", 2, 2, width=6))["relu1"]
    x = torch.randn(4, 6)
    site(x)
    alpha = torch.rand(6)
    site.set_gate(alpha)
    assert torch.allclose(site(x), alpha * torch.relu(x) + (1 - alpha) * x)
    site.set_gate(None)
    mask = torch.tensor([1.0, 0, 1, 0, 0, 1])
    site.set_mask(mask)
    assert torch.equal(site(x), torch.where(mask.bool(), torch.relu(x), x))
    site.set_mask(torch.zeros(6))
    assert torch.equal(site(x), x)  # all-linear: the identity
    site.set_mask(torch.ones(6))
    assert torch.equal(site(x), torch.relu(x))


def test_binarized_model_matches_gated_model_at_zero_one_gates():
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, width=4).eval()
    count_relus(model, (1, 8, 8))
    total = 0
    for site in relu_sites(model).values():
        site.set_gate((torch.rand(site.unit_shape) < 0.5).float())
        total += int(site.gate.sum())
    x = torch.randn(6, 1, 8, 8)
    gated = model(x)
    binarize(model, total)
    assert all(site.gate is None and site.mask is not None for site in relu_sites(model).values())
    assert count_relus(model, (1, 8, 8)).total == total
    assert torch.allclose(model(x), gated)


def _trained_base(tiny_raw):
    spec = validate_spec(tiny_raw)
    splits = load_splits(spec.data, 0)
    torch.manual_seed(0)
    model = create_model("small_cnn", 10, 1, width=4)
    count_relus(model, (1, 8, 8))
    return spec, splits, model


def snl(base, splits, spec, budget, generator):
    """SNL with the spec's options, on the tiny base model (small_cnn width 4, 10 classes, 1 channel)."""
    return run_linearizer(base, ModelArgs("small_cnn", 10, 1, {"width": 4}), splits, spec, budget, generator)


@pytest.mark.parametrize("budget", [0.05, 0.2])
def test_snl_reaches_its_budget(tiny_raw, budget):
    tiny_raw["linearize"]["budget"] = budget
    spec, splits, base = _trained_base(tiny_raw)
    target = resolve_budget(budget, 1024)
    out = snl(copy.deepcopy(base), splits, spec, target, torch.Generator().manual_seed(0))
    model, history = out.model, out.history
    live = count_relus(model, (1, 8, 8)).total
    assert 0.95 * target <= live <= target
    assert history[-1]["live_relus"] <= target < history[-2]["live_relus"]  # stopped at the first epoch under
    lambdas = [h["lambda"] for h in history]
    assert lambdas == sorted(lambdas) and lambdas[0] == spec.linearize.snl.lambda_init  # λ only grows
    # the gated weights are kept; gates became masks; the base model is untouched
    assert all(s.gate is None for s in relu_sites(model).values())
    assert all(s.mask is None for s in relu_sites(base).values())


def test_snl_is_deterministic_per_seed(tiny_raw):
    spec, splits, base = _trained_base(tiny_raw)
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        out = snl(copy.deepcopy(base), splits, spec, 51, torch.Generator().manual_seed(1))
        outs.append((out.model.state_dict(), out.history))
    assert outs[0][1] == outs[1][1]
    assert all(torch.equal(outs[0][0][k], outs[1][0][k]) for k in outs[0][0])


def test_snl_fails_clearly_when_budget_not_reached(tiny_raw):
    from fairsweep.errors import StageError

    tiny_raw["linearize"]["snl"].update(max_epochs=2, lambda_init=1e-6, lambda_growth=1.0)
    spec, splits, base = _trained_base(tiny_raw)
    with pytest.raises(StageError, match="did not reach its budget of 10 ReLUs within linearize.snl.max_epochs=2"):
        snl(copy.deepcopy(base), splits, spec, 10, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("warmup", [None, 8])  # None: the default, both SNL codebases' 5 epochs
def test_snl_grows_lambda_exactly_after_epochs_whose_count_did_not_fall_below_its_lowest(tiny_raw, warmup):
    # a smaller Adam step than TINY's keeps every gate live through the warm-up, so λ must hold still
    # there although the count does not fall
    tiny_raw["linearize"]["snl"].update(lambda_init=2e-3, lambda_growth=1.5, lr=5e-3)
    if warmup is not None:
        tiny_raw["linearize"]["snl"]["lambda_warmup"] = warmup
    spec, splits, base = _trained_base(tiny_raw)
    assert spec.linearize.snl.lambda_warmup == (5 if warmup is None else warmup)
    warmup = spec.linearize.snl.lambda_warmup
    history = snl(copy.deepcopy(base), splits, spec, 51, torch.Generator().manual_seed(0)).history
    lowest, lam = 1024, spec.linearize.snl.lambda_init  # every gate starts live
    for row in history:  # the oracle: replay the rule over the recorded live counts
        assert row["lambda"] == pytest.approx(lam, rel=1e-12)
        if row["live_relus"] >= lowest and row["epoch"] >= warmup:
            lam *= 1.5
        lowest = min(lowest, row["live_relus"])
    # through the warm-up (epochs 0 … warmup − 1) the count never fell and λ stayed; then it grew at once
    assert [row["live_relus"] for row in history[:warmup + 1]] == [1024] * (warmup + 1)
    assert [row["lambda"] for row in history[:warmup + 1]] == [spec.linearize.snl.lambda_init] * (warmup + 1)
    assert history[warmup + 1]["lambda"] == pytest.approx(1.5 * spec.linearize.snl.lambda_init, rel=1e-12)
    assert any(b["lambda"] > a["lambda"] for a, b in zip(history, history[1:]))  # the rule did fire
