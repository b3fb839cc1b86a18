"""Paper-scale architectures: published ReLU counts, gating and masking on every registered model,
the inputs an architecture takes, and `fairsweep relus`."""

import copy
import io
import json
import math

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from fairsweep.cli import app
from fairsweep.linearize import count_relus
from fairsweep.models import create_model, input_problem, list_models, relu_sites
from test_models_and_snl import INPUTS

RESNET18_32 = {"stem": 65_536, "stage1": 262_144, "stage2": 131_072, "stage3": 65_536, "stage4": 32_768}
# the SNL authors' ResNets (`ResNet_IN`: no ReLU after the stem) at 32×32, per stage: C·H·W × ReLUs per block × blocks
SNL_RESNET18_32 = {"stage1": 64 * 32 * 32 * 2 * 2, "stage2": 128 * 16 * 16 * 2 * 2, "stage3": 256 * 8 * 8 * 2 * 2,
                   "stage4": 512 * 4 * 4 * 2 * 2}
SNL_RESNET34_32 = {"stage1": 64 * 32 * 32 * 2 * 3, "stage2": 128 * 16 * 16 * 2 * 4, "stage3": 256 * 8 * 8 * 2 * 6,
                   "stage4": 512 * 4 * 4 * 2 * 3}


def meta_count(name: str, shape: tuple[int, ...], **kwargs):
    with torch.device("meta"):
        return count_relus(create_model(name, 10, shape[0], **kwargs), shape)


def test_every_registered_model_has_a_test_input():
    assert set(list_models()) == set(INPUTS)


def test_resnet18_published_counts_at_32_and_64():
    count = meta_count("resnet18", (3, 32, 32))
    assert count.total == 557_056 and count.stages == RESNET18_32
    big = meta_count("resnet18", (3, 64, 64))
    assert big.total == 4 * 557_056 and big.stages == {k: 4 * v for k, v in RESNET18_32.items()}


@pytest.mark.parametrize("name,total,stages", [("resnet18", 491_520, SNL_RESNET18_32),
                                               ("resnet34", 901_120, SNL_RESNET34_32)])
def test_resnets_without_the_stem_relu_have_the_snl_authors_counts(name, total, stages):
    count = meta_count(name, (3, 32, 32), stem_relu=False)
    assert count.total == total == sum(stages.values()) and count.stages == stages
    assert meta_count(name, (3, 64, 64), stem_relu=False).total == 4 * total
    # the same sites but the stem's, and the stem's 64·32·32 is the whole difference
    with_stem = meta_count(name, (3, 32, 32))
    assert list(with_stem.sites) == ["stem.relu", *count.sites] and with_stem.total == total + 65_536
    assert meta_count(name, (3, 32, 32), stem_relu=True) == with_stem  # True is the architecture's own


def test_a_resnet18_without_the_stem_relu_trains_and_counts_after_save_load():
    torch.manual_seed(0)
    model = create_model("resnet18", 3, 3, stem_relu=False)
    assert count_relus(model, (3, 32, 32)).total == 491_520
    assert "stem.relu" not in relu_sites(model) and not any(name.startswith("stem") for name in relu_sites(model))
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert math.isfinite(float(loss.detach()))
    assert not torch.equal(before["stem.conv.weight"], model.state_dict()["stem.conv.weight"])
    # the stem is conv + BN, nothing after it: its output is the first block's input as it is
    stem = model.stem.eval()
    assert torch.equal(stem(x), stem.bn(stem.conv(x))) and (stem(x) < 0).any()
    live = 0
    for site in relu_sites(model).values():
        mask = (torch.rand(site.unit_shape) < 0.3).float()
        site.set_mask(mask)
        live += int(mask.sum())
    assert count_relus(model, (3, 32, 32)).total == live
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = create_model("resnet18", 3, 3, stem_relu=False)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert count_relus(fresh, (3, 32, 32)).total == live
    assert count_relus(fresh, (3, 32, 32)).sites.keys() == count_relus(model, (3, 32, 32)).sites.keys()
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_counts_on_meta_match_a_real_forward():
    real = count_relus(create_model("resnet18", 10, 3), (3, 32, 32))
    assert real == meta_count("resnet18", (3, 32, 32))


@pytest.mark.parametrize("name,total", [
    ("resnet34", 65_536 + 6 * 65_536 + 8 * 32_768 + 12 * 16_384 + 6 * 8_192),  # 966,656, blocks [3, 4, 6, 3]
    ("vgg19", 2 * 65_536 + 2 * 32_768 + 4 * 16_384 + 4 * 8_192 + 4 * 2_048),  # 303,104: (C·H·W) × convs per stage
    # pre-activation WRN-22-8: per stage, the first block's first ReLU sees the stage's input
    ("wrn22_8", (16 * 1024 + 5 * 131_072) + (131_072 + 5 * 65_536) + (65_536 + 5 * 32_768) + 32_768),
])
def test_paper_architectures_exact_counts(name, total):
    count = meta_count(name, (3, 32, 32))
    assert count.total == total == sum(count.stages.values())
    assert meta_count(name, (3, 64, 64)).total == 4 * total


@pytest.mark.parametrize("name", list_models())
def test_every_model_gates_at_one_and_zero_like_relu_and_identity(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_channels=INPUTS[name][0]).eval()
    count_relus(model, INPUTS[name])
    x = torch.randn(2, *INPUTS[name])
    relu_out = model(x)
    linear = copy.deepcopy(model)
    for site_name in relu_sites(linear):  # the oracle: every ReLU removed structurally
        parent, _, leaf = site_name.rpartition(".")
        setattr(linear.get_submodule(parent) if parent else linear, leaf, nn.Identity())
    for value, expected in ((1.0, relu_out), (0.0, linear(x))):
        for site in relu_sites(model).values():
            site.set_gate(torch.full(site.unit_shape, value))
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_frozen_all_zero_and_all_one_masks_short_circuit():
    site = relu_sites(create_model("resnet18", 10, 3))["stage1.0.relu1"]
    x = torch.randn(2, 64, 8, 8)
    site(x)
    site.set_mask(torch.zeros(site.unit_shape))
    assert site(x) is x  # the identity itself: no per-element work
    site.set_mask(torch.ones(site.unit_shape))
    assert site.mask is not None and torch.equal(site(x), torch.relu(x)) and site._mode == "relu"


def test_residual_sites_are_the_relus_after_the_addition():
    resnet = relu_sites(create_model("resnet18", 10, 3))
    assert [n for n, s in resnet.items() if s.residual][:2] == ["stage1.0.relu2", "stage1.1.relu2"]
    assert sum(s.residual for s in resnet.values()) == 8  # one per block
    assert not any(s.residual for s in relu_sites(create_model("vgg19", 10, 3)).values())
    wrn = relu_sites(create_model("wrn22_8", 10, 3))
    assert sum(s.residual for s in wrn.values()) == 9 and wrn["stage2.1.relu1"].residual


@pytest.mark.parametrize("name,shape,expect", [
    ("vgg19", (3, 16, 16), "Output size is too small"),  # five 2× max-pools need at least 32×32
    ("resnet18", (2,), "conv2d"),
    ("resnet18", (3, 30, 30), None),
    ("small_cnn", (1, 8, 8), None),
])
def test_input_sizes_an_architecture_takes(name, shape, expect):
    problem = input_problem(name, shape)
    assert (problem is None) if expect is None else (expect in problem)


def test_resolution_factor_downsamples_inside_the_model():
    assert meta_count("resnet18", (3, 32, 32), resolution=0.5).total == 557_056 // 4
    assert "does not divide a 30×30 input" in input_problem("resnet18", (3, 30, 30), resolution=0.25)
    model = create_model("small_cnn", 3, 1, resolution=0.5).eval()
    x = torch.randn(2, 1, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(x, 2)  # the oracle: area resampling by 2 is 2×2 averaging
    plain = copy.deepcopy(model)
    plain.resample.factor = 1.0
    assert torch.allclose(model(x), plain(pooled), atol=1e-6)


runner = CliRunner()


def test_relus_cli_json():
    result = runner.invoke(app, ["relus", "resnet18", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {"total", "stages", "sites"}
    assert out["total"] == 557_056 and out["stages"] == RESNET18_32
    assert out["sites"]["stem.relu"] == 65_536 and sum(out["sites"].values()) == out["total"] and len(out["sites"]) == 17
    big = json.loads(runner.invoke(app, ["relus", "resnet18", "--input-size", "64", "--json"]).output)
    assert big["total"] == 4 * 557_056


def test_relus_cli_counts_the_resnet_without_the_stem_relu():
    for name, total, stages in (("resnet18", 491_520, SNL_RESNET18_32), ("resnet34", 901_120, SNL_RESNET34_32)):
        result = runner.invoke(app, ["relus", name, "--no-stem-relu", "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert out["total"] == total and out["stages"] == stages and "stem.relu" not in out["sites"]
    out = json.loads(runner.invoke(app, ["relus", "resnet18", "--stem-relu", "--json"]).output)
    assert out["total"] == 557_056 and out["stages"] == RESNET18_32
    assert "491,520" in runner.invoke(app, ["relus", "resnet18", "--no-stem-relu"]).output


def test_relus_cli_table():
    result = runner.invoke(app, ["relus", "resnet18", "--input-size", "32"])
    assert result.exit_code == 0
    assert "557,056" in result.output and "262,144" in result.output and "stage2.1.relu2" in result.output
    assert "128×16×16" in result.output


@pytest.mark.parametrize("args,expect", [
    (["relus", "resnet81"], "unknown architecture `resnet81` (did you mean `resnet18`?)"),
    (["relus", "vgg19", "--input-size", "16"], "vgg19 cannot take a 3×16×16 input"),
    (["relus", "small_cnn", "--input-size", "8", "--in-channels", "1", "--no-stem-relu"],
     "`--no-stem-relu` is given, but architecture `small_cnn` has no stem_relu option (whether a ReLU follows the "
     "stem): only resnet18, resnet34 take it. Leave it out for `small_cnn`."),
    (["relus", "wrn22_8", "--stem-relu"], "`--stem-relu` is given, but architecture `wrn22_8` has no stem_relu option"),
])
def test_relus_cli_bad_input_exits_2(args, expect):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert expect in " ".join(result.output.split())


@pytest.mark.parametrize("model,expect", [
    ({"arch": "small_cnn", "width": 4, "stem_relu": False},
     "`model.stem_relu` is false, but architecture `small_cnn` has no stem_relu option (whether a ReLU follows the "
     "stem): only resnet18, resnet34 take it. Leave it out for `small_cnn`."),
    ({"arch": "mlp", "stem_relu": True}, "`model.stem_relu` is true, but architecture `mlp` has no stem_relu option"),
])
def test_stem_relu_on_an_architecture_without_it_is_an_error_before_any_work(tmp_path, monkeypatch, tiny_raw, model,
                                                                               expect):
    monkeypatch.chdir(tmp_path)
    tiny_raw["model"] = model
    if model["arch"] == "mlp":
        tiny_raw["data"] = {"dataset": "toy2d"}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    for command in ("validate", "run"):
        result = runner.invoke(app, [command, str(path), "--storage", str(tmp_path / "runs")])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert expect in text and text.count("error:") == 1 and "Traceback" not in text
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # no work started


def test_stem_relu_in_a_grid_over_architectures_names_the_one_without_it(tiny_raw):
    from fairsweep.errors import UserError
    from fairsweep.spec import validate_spec
    from fairsweep.sweep.preflight import check_spec

    tiny_raw["model"] = {"arch": "resnet18", "stem_relu": False}
    tiny_raw["sweep"] = {"grid": {"model.arch": ["resnet18", "vgg19"]}}
    spec = validate_spec(tiny_raw)
    check_spec(spec, [{"model.arch": "resnet18"}])  # the grid's ResNet takes it
    with pytest.raises(UserError) as info:
        check_spec(spec, spec.grid_points())
    problems = info.value.problems
    assert len(problems) == 1 and "architecture `vgg19` has no stem_relu" in problems[0]
    with pytest.raises(UserError):
        validate_spec({**tiny_raw, "model": {"arch": "resnet18", "stem_relu": "sometimes"}})


def test_a_spec_builds_the_resnet_without_the_stem_relu_only_when_set(tiny_raw):
    from fairsweep.spec import validate_spec
    from fairsweep.sweep.plan import base_model_args

    for stem_relu, total in ((None, 557_056), (True, 557_056), (False, 491_520)):
        tiny_raw["model"] = {"arch": "resnet18"} if stem_relu is None else {"arch": "resnet18", "stem_relu": stem_relu}
        spec = validate_spec(tiny_raw)
        assert spec.model.factory_kwargs() == ({} if stem_relu is None else {"stem_relu": stem_relu})
        with torch.device("meta"):
            assert count_relus(base_model_args(spec, 10, 3).build(), (3, 32, 32)).total == total
