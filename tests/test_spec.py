"""Spec validation: every mistake is one paragraph naming the key, the value and what is accepted."""


import pytest
import torch
import yaml

from conftest import DIGITS_MU_ABLATION, MU_ABLATION, fairsweep_cli
from fairsweep.data import load_splits
from fairsweep.errors import UserError
from fairsweep.spec import OptimConfig, apply_overrides, load_spec, validate_spec
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.preflight import check_spec


def problems(raw) -> str:
    with pytest.raises(UserError) as info:
        validate_spec(raw)
    return "\n".join(info.value.problems)


def preflight_problems(raw) -> str:
    """What the pre-flight finds that the spec alone cannot know (registry names), before any data is read."""
    with pytest.raises(UserError) as info:
        spec = validate_spec(raw)
        check_spec(spec, spec.grid_points())
    return "\n".join(info.value.problems)


def test_embedded_sweeps_are_valid_and_have_the_issue_grid():
    spec = load_spec(MU_ABLATION)
    assert (spec.data.dataset, spec.data.target, spec.data.group) == ("glyphs", "shape", "style")
    assert spec.linearize.method == "snl"
    grid = spec.sweep.grid
    assert list(grid) == ["seed", "linearize.budget", "finetune.mu"]
    assert [len(v) for v in grid.values()] == [3, 3, 4] and grid["finetune.mu"][0] == 0.0
    assert all(0 < b < 1 for b in grid["linearize.budget"])  # fractions of the model's ReLUs
    for seed in grid["seed"]:  # enough minority test samples that a group's accuracy is not coarse
        test = load_splits(spec.data, seed).test
        assert int(torch.bincount(test.g).min()) >= 300
    digits = load_spec(DIGITS_MU_ABLATION)
    assert digits.data.dataset == "digits" and [len(v) for v in digits.sweep.grid.values()] == [3, 3, 4]


def test_mitigation_sources_runs_the_four_finetunings_on_the_ablations_linearized_models():
    ablation, sources = load_spec(MU_ABLATION), load_spec(MU_ABLATION.with_name("mitigation_sources.yaml"))
    mu = sources.sweep.grid["finetune.mu"]
    assert sources.sweep.grid["finetune.mitigation"] == ["algorithm1", "released_code"]
    assert len(mu) == 2 and mu[0] == 0.0 and mu[1] in ablation.sweep.grid["finetune.mu"]
    assert {k: v for k, v in sources.sweep.grid.items() if k not in ("finetune.mitigation", "finetune.mu")} == \
        {k: v for k, v in ablation.sweep.grid.items() if k != "finetune.mu"}
    ablation_plan, sources_plan = make_plan(ablation), make_plan(sources)
    for kind in ("base", "linearize"):  # the same stages: run after the ablation, nothing of them trains
        assert set(sources_plan.unique_stages(kind)) == set(ablation_plan.unique_stages(kind))
    new = set(sources_plan.unique_stages("finetune")) - set(ablation_plan.unique_stages("finetune"))
    assert len(new) == len(sources_plan.unique_stages("finetune")) // 2  # the released code's arms only


def test_toy2d_sweep_is_the_papers_figure_2_setting():
    from fairsweep.linearize import count_relus, resolve_budget
    from fairsweep.sweep.plan import base_model_args

    spec = load_spec(MU_ABLATION.with_name("toy2d.yaml"))
    assert spec.data.dataset == "toy2d" and spec.model.arch == "mlp"
    assert spec.linearize.method == "random" and spec.linearize.budget == 0.5 and spec.finetune.from_scratch
    assert len(spec.sweep.grid["seed"]) >= 10
    # ReLU vs half of it linear, nothing else: both models are trained with the same recipe
    recipe = set(OptimConfig.model_fields) - {"batch_size"}
    assert spec.finetune.model_dump(include=recipe) == spec.base.model_dump(include=recipe)
    assert (spec.finetune.batch_size or spec.data.batch_size) == (spec.base.batch_size or spec.data.batch_size)
    relus = count_relus(base_model_args(spec, 2, 2).build(), (2,)).total
    assert relus == 2 * spec.model.width and resolve_budget(spec.linearize.budget, relus) == spec.model.width
    assert spec.diagnostics.hessian and spec.diagnostics.bound  # on in the embedded sweeps
    assert load_spec(MU_ABLATION).diagnostics.bound


def test_unknown_key_suggests_the_closest(tiny_raw):
    tiny_raw["finetune"]["mux"] = 0.1
    text = problems(tiny_raw)
    assert "unknown key `finetune.mux` (did you mean `mu`?)" in text
    assert "Valid keys here:" in text and "temperature" in text


def test_unknown_section(tiny_raw):
    tiny_raw["finetun"] = {}
    assert "unknown key `finetun` (did you mean `finetune`?)" in problems(tiny_raw)


def test_wrong_type(tiny_raw):
    tiny_raw["finetune"]["epochs"] = "ten"
    text = problems(tiny_raw)
    assert "`finetune.epochs`" in text and "'ten'" in text and "integer" in text


@pytest.mark.parametrize("key,value,expect", [
    (("finetune", "mu"), -0.1, "greater than or equal to 0"),
    (("linearize", "budget"), 0, "neither a fraction of the ReLUs (above 0, below 1, e.g. 0.05) nor a count"),
    (("linearize", "budget"), -5, "neither a fraction"),
    (("linearize", "budget"), 150.5, "or as no count (a count is a whole number)"),
    # a float from 1 reads two ways: the error names both
    (("linearize", "budget"), 1.0, "reads as a fraction of the ReLUs, which is below 1, or as a count of 1 ReLU"),
    (("linearize", "budget"), 2.0, "or as a count of 2 ReLUs (write 2)"),
])
def test_out_of_range(tiny_raw, key, value, expect):
    tiny_raw[key[0]][key[1]] = value
    text = problems(tiny_raw)
    assert f"`{key[0]}.{key[1]}`" in text and expect in text and repr(value) in text


@pytest.mark.parametrize("section,key,bad,names", [
    ("data", "dataset", "digitz", "digits"),
    ("model", "arch", "small_cn", "small_cnn"),
    ("linearize", "method", "snll", "snl"),
])
def test_unknown_names_list_the_valid_ones(tiny_raw, section, key, bad, names):
    tiny_raw[section][key] = bad
    text = preflight_problems(tiny_raw)
    assert f"`{bad}`" in text and f"did you mean `{names}`" in text and "Available:" in text


def test_unknown_mitigation_lists_the_valid_ones(tiny_raw):
    tiny_raw["finetune"]["mitigation"] = "foo"
    text = problems(tiny_raw)
    assert "`finetune.mitigation`: input should be 'algorithm1' or 'released_code', got 'foo'." == text
    tiny_raw["finetune"]["mitigation"] = "released_code"
    assert validate_spec(tiny_raw).finetune.mitigation == "released_code"
    del tiny_raw["finetune"]["mitigation"]
    assert validate_spec(tiny_raw).finetune.mitigation == "algorithm1"  # the default: Algorithm 1


def test_the_mitigation_is_part_of_the_finetune_stage_identity_only(tiny_raw):
    a = make_plan(validate_spec(tiny_raw)).trials[0]
    tiny_raw["finetune"]["mitigation"] = "released_code"
    b = make_plan(validate_spec(tiny_raw)).trials[0]
    assert a.stages["linearize"].id == b.stages["linearize"].id and a.stages["finetune"].id != b.stages["finetune"].id


def test_all_problems_reported_together(tiny_raw):
    tiny_raw["finetune"]["mu"] = -1
    tiny_raw["base"]["epochz"] = 3
    with pytest.raises(UserError) as info:
        validate_spec(tiny_raw)
    assert len(info.value.problems) == 2


def test_grid_keys_and_values_are_checked(tiny_raw):
    tiny_raw["sweep"] = {"grid": {"finetune.muu": [0.1], "finetune.mu": [0, -1], "seed": 3}}
    text = problems(tiny_raw)
    assert "unknown key `sweep.grid.finetune.muu` (did you mean `mu`?)" in text
    assert "`sweep.grid.finetune.mu` value -1" in text
    assert "`sweep.grid.seed`: expected a non-empty list, got 3" in text


def test_overrides_set_scalars_and_grids(tiny_raw):
    raw = apply_overrides(tiny_raw, ["finetune.epochs=7", "finetune.mu=[0,0.01]", "data.root=~/data"])
    spec = validate_spec(raw)
    assert spec.finetune.epochs == 7 and spec.data.root == "~/data"
    assert spec.sweep.grid["finetune.mu"] == [0, 0.01]
    # a scalar for a key already in the grid narrows the grid
    spec = validate_spec(apply_overrides(raw, ["finetune.mu=0.5"]))
    assert spec.sweep.grid["finetune.mu"] == [0.5]
    # a list for a list-typed key is a value, not a grid
    spec = validate_spec(apply_overrides(raw, ["data.imbalance.minority_classes=[1,2]"]))
    assert spec.data.imbalance.minority_classes == [1, 2] and "data.imbalance.minority_classes" not in spec.sweep.grid


def test_malformed_override(tiny_raw):
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        apply_overrides(tiny_raw, ["finetune.mu"])


def test_plan_counts_of_the_embedded_sweep():
    plan = make_plan(load_spec(MU_ABLATION))
    assert len(plan.trials) == 36
    assert [len(plan.unique_stages(k)) for k in ("base", "linearize", "finetune")] == [3, 9, 36]
    # trials sharing a seed share its base stage; seeds vary fastest so neighbours rarely wait
    assert [t.values["seed"] for t in plan.trials[:3]] == [0, 1, 2]


def test_stage_identity_is_content(tiny_raw):
    a = make_plan(validate_spec(tiny_raw)).trials[0]
    tiny_raw["finetune"]["mu"] = 0.01
    b = make_plan(validate_spec(tiny_raw)).trials[0]
    assert a.stages["base"].id == b.stages["base"].id and a.stages["linearize"].id == b.stages["linearize"].id
    assert a.stages["finetune"].id != b.stages["finetune"].id
    tiny_raw["base"]["epochs"] = 4  # a parent change changes every descendant
    c = make_plan(validate_spec(tiny_raw)).trials[0]
    assert len({c.stages[k].id for k in ("base", "linearize", "finetune")} & {b.stages[k].id for k in
               ("base", "linearize", "finetune")}) == 0


def test_stem_relu_is_part_of_the_base_identity_resolved(tiny_raw):
    """What the stage computes: an unset stem_relu is the architecture's own (a ResNet's stem ReLU), so it
    names the same base stage as `true`; `false` is another model; an architecture without the option has
    none in its identity."""
    trial = make_plan(validate_spec(tiny_raw)).trials[0]
    assert "stem_relu" not in trial.stages["base"].config["model"]  # small_cnn has no stem ReLU option
    tiny_raw["model"].update(arch="resnet18", width=None)
    ids = {}
    for stem_relu in (None, False, True):
        if stem_relu is not None:
            tiny_raw["model"]["stem_relu"] = stem_relu
        ids[stem_relu] = make_plan(validate_spec(tiny_raw)).trials[0].stages["base"].id
    assert ids[None] == ids[True] != ids[False]


# --- the CLI: exit status 2, one paragraph, no traceback ---------------------------------------

def cli(*args, cwd):
    return fairsweep_cli(*args, cwd=cwd)


def write(tmp_path, raw):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("mutate,expect", [
    (lambda r: r["finetune"].update(mux=1), "unknown key `finetune.mux` (did you mean `mu`?)"),
    (lambda r: r["linearize"].update(budget=100000), "budget must be > 0 and at most the model's 1024 ReLUs"),
    (lambda r: r["data"].update(dataset="cifar11"), "unknown dataset `cifar11`"),
    (lambda r: r.update(resources={"device": "cuda"}), "`device` is `cuda` but `gpus_per_trial` is 0"),
    (lambda r: r.update(resources={"device": "cuda", "gpus_per_trial": 1024}),
     "`resources.gpus_per_trial` is 1024.0 but this machine has"),
    (lambda r: r.update(resources={"cpus_per_trial": 4096}), "`resources.cpus_per_trial` is 4096.0 but this machine"),
])
def test_cli_rejects_bad_specs_with_status_2(tmp_path, tiny_raw, mutate, expect):
    mutate(tiny_raw)
    for command in ("validate", "run"):
        result = cli(command, str(write(tmp_path, tiny_raw)), "--storage", str(tmp_path / "runs"), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert expect in " ".join(result.stderr.split())
        assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # no work started


def test_cli_unknown_mitigation_is_one_paragraph_and_status_2(tmp_path):
    result = cli("validate", str(MU_ABLATION), "--set", "finetune.mitigation=foo", cwd=tmp_path)
    assert result.returncode == 2
    assert "`finetune.mitigation`: input should be 'algorithm1' or 'released_code', got 'foo'." in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_version_and_bare_command(tmp_path):
    from fairsweep import __version__

    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"fairsweep {__version__}"
    bare = cli(cwd=tmp_path)
    assert bare.returncode == 0 and "Usage:" in bare.stdout and "run" in bare.stdout and "validate" in bare.stdout


@pytest.mark.parametrize("command", ["", "validate", "run", "datasets", "relus", "pareto", "report"])
def test_cli_help_shows_what_to_write_and_whole_sentences(tmp_path, command):
    result = cli(*([command] if command else []), "--help", cwd=tmp_path)
    text = result.stdout
    assert result.returncode == 0 and "--help" in text
    assert "<bool>" not in text and "<list" not in text and "<int range>" not in text  # Python types, not values
    if not command:  # the list shows each command's first paragraph, its line breaks kept: it must be one line
        import typer

        from fairsweep.cli import app

        for name, sub in typer.main.get_command(app).commands.items():
            assert "\n" not in sub.help.strip().split("\n\n")[0], name


def test_cli_missing_spec_file(tmp_path):
    result = cli("run", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "spec file not found: nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_budget_in_grid_above_relu_count(tmp_path, tiny_raw):
    result = cli("validate", str(write(tmp_path, tiny_raw)), "--set", "linearize.budget=[0.1,5000]", cwd=tmp_path)
    assert result.returncode == 2
    assert "`sweep.grid.linearize.budget`: budget must be > 0 and at most the model's 1024 ReLUs" in result.stderr
    assert "got 5000" in result.stderr


def test_a_budget_is_a_fraction_below_1_or_a_whole_count_and_survives_a_round_trip(tiny_raw):
    for budget, kind in ((0.05, float), (300, int)):
        tiny_raw["linearize"]["budget"] = budget
        spec = validate_spec(tiny_raw)
        assert type(spec.linearize.budget) is kind  # a count stays a count through the workers' JSON
        assert validate_spec(spec.model_dump(mode="json")).linearize.budget == budget


def test_a_single_set_value_is_named_as_written_and_another_keys_typo_is_reported_once(tmp_path):
    result = cli("validate", str(MU_ABLATION), "--set", "finetune.mu=-0.1", "--set", "finetune.muu=0.1",
                 "--set", "linearize.budget=2.0", cwd=tmp_path)
    assert result.returncode == 2
    paragraphs = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert sorted(paragraphs) == sorted([
        "error: unknown key `finetune.muu` (did you mean `mu`?). Valid keys here: batch_size, epochs, from_scratch, "
        "lr, mitigation, momentum, mu, optimizer, schedule, select, step_every, step_gamma, temperature, weight_decay.",
        "error: `--set finetune.mu=-0.1`: input should be greater than or equal to 0.",
        "error: `--set linearize.budget=2.0`: 2.0 reads as a fraction of the ReLUs, which is below 1, or as a count "
        "of 2 ReLUs (write 2); write a fraction below 1 (e.g. 0.05) or a whole count without a decimal point "
        "(e.g. 2048)."])


def test_cli_validate_prints_the_plan(tmp_path):
    result = cli("validate", str(MU_ABLATION), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "36 trials" in result.stdout
    assert "budgets: 0.2 → 1,229 of 6,144 ReLUs, 0.3 → 1,843 of 6,144 ReLUs, 0.6 → 3,686 of 6,144 ReLUs" in result.stdout
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "│ 3 " in lines["base"] and "│ 9 " in lines["linearize"] and "│ 36 " in lines["finetune"]


def test_cli_unreachable_cluster_is_a_clear_error(tmp_path, tiny_raw):
    result = cli("run", str(write(tmp_path, tiny_raw)), "--address", "127.0.0.1:1", "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 2
    assert "could not connect to a Ray cluster at `127.0.0.1:1`" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "mlflow.db").exists()


def test_a_directory_as_the_spec_lists_the_specs_in_it(tmp_path):
    result = cli("validate", str(MU_ABLATION.parent), cwd=tmp_path)
    assert result.returncode == 2 and "is a directory, not a spec file" in result.stderr
    assert "mu_ablation.yaml" in result.stderr and "Traceback" not in result.stderr


def test_storage_that_cannot_be_a_directory_is_an_error_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("")
    for storage in ("afile", "afile/runs"):
        result = cli("validate", str(MU_ABLATION), "--storage", storage, cwd=tmp_path)
        assert result.returncode == 2 and f"`--storage {storage}`" in result.stderr
        assert "afile is a file, not a directory" in result.stderr and not (tmp_path / "afile").is_dir()


def test_an_unusable_tracking_store_is_an_error_before_any_work(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("run", str(MU_ABLATION), "--set", f"tracking.uri=http://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 2 and f"nothing answers at 127.0.0.1:{port}" in result.stderr
    (tmp_path / "afile").write_text("")
    result = cli("run", str(MU_ABLATION), "--set", f"tracking.uri=sqlite:///{tmp_path}/afile/mlflow.db", cwd=tmp_path)
    assert result.returncode == 2 and "afile is a file, not a directory" in result.stderr
    assert not (tmp_path / "fairsweep-runs").exists()  # nothing trained, nothing stored


def test_a_huge_value_is_shown_short_and_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    bomb = ["name: bomb", 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in "bcdefg":  # 9^7 leaves in 2 KB of YAML
        previous = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [{', '.join([f'*{previous}'] * 9)}]")
    bomb += ["finetune:", "  mu: *g"]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    result = cli("validate", "bomb.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "`finetune.mu`: input should be a valid number, got [[[...]" in result.stderr
    assert len(result.stderr) < 3000
    result = cli("validate", str(MU_ABLATION), "--set", f"seed={list(range(100))}",
                 "--set", f"finetune.mu={[i / 1000 for i in range(401)]}", cwd=tmp_path)
    assert result.returncode == 2
    assert ("`sweep.grid` makes 120,300 trials (100 seed × 3 linearize.budget × 401 finetune.mu), more than "
            "fairsweep plans in one sweep (100,000)") in result.stderr
