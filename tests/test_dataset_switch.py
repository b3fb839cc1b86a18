"""Switching a spec's dataset from the command line (`--set data.dataset=cifar10`): one invocation names
every `--set` still needed, and with them the spec checks; keys only other datasets read are noted."""

import re

import pytest

from conftest import MU_ABLATION, ROOT, fairsweep_cli
from fairsweep.data import dataset_info, list_datasets
from fairsweep.errors import UserError
from fairsweep.spec import load_spec
from fairsweep.sweep.preflight import check_spec

SET = re.compile(r"--set ([\w.]+=[^`\s)]+)")  # the `--set KEY=VALUE` forms a problem names


@pytest.fixture(autouse=True)
def _no_data_root(monkeypatch):
    monkeypatch.delenv("FAIRSWEEP_DATA", raising=False)


def spec_problems(path, sets) -> list[str]:
    """What the pre-flight's spec check finds before any data is read ([] if nothing)."""
    try:
        spec = load_spec(path, sets)
        check_spec(spec, spec.grid_points())
    except UserError as exc:
        return exc.problems
    return []


def errors_of(result) -> list[str]:
    return [" ".join(p.split()) for p in " ".join(result.stderr.splitlines()).split("error: ") if p.strip()]


def test_switching_the_default_spec_to_cifar10_names_every_set_still_needed_at_once(tmp_path):
    result = fairsweep_cli("validate", str(MU_ABLATION), "--set", "data.dataset=cifar10", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert errors_of(result) == [
        "`data.target`: cifar10 has no target attribute `shape`; its target attributes: class. "
        "Add `--set data.target=class`.",
        "`data.group`: cifar10 has no group attribute `style`; its group attributes: class. "
        "Add `--set data.group=class`.",
        "`data.test_fraction` is 0.65, but cifar10 ships its own test set, which is the test split. "
        "Add `--set data.test_fraction=null`.",
        "`data.root`: dataset `cifar10` loads from a local directory; set data.root (or --set data.root=DIR) "
        "or the environment variable FAIRSWEEP_DATA."]


def test_with_the_sets_it_names_the_switched_spec_validates(tmp_path, real_data):
    sets = ["data.dataset=cifar10", "data.target=class", "data.group=class", "data.test_fraction=null"]
    missing = tmp_path / "nothing-here"
    result = fairsweep_cli("validate", str(MU_ABLATION), *(f"--set={s}" for s in sets),
                           f"--set=data.root={missing}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [problem] = errors_of(result)  # only where the files are: the spec itself is right
    assert problem.startswith(f"dataset `cifar10`: data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
                              f"data_batch_5, test_batch, batches.meta not found in {missing / 'cifar-10-batches-py'}")
    # the fixture is small: at the spec's val_fraction of 0.05 a minority class keeps 2 validation images
    result = fairsweep_cli("validate", str(MU_ABLATION), *(f"--set={s}" for s in sets),
                           f"--set=data.root={real_data['cifar10'].data['root']}", "--set=data.min_group_size=2",
                           "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "spec mu_ablation is valid: 36 trials" in result.stdout
    assert "data cifar10 (seed 0), samples per group in train / val / test:" in result.stdout


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_switched_to_is_fixed_by_the_sets_its_problems_name(name, real_data):
    problems = spec_problems(MU_ABLATION, [f"data.dataset={name}"])
    if name == "glyphs":
        assert problems == []
        return
    assert problems and all(SET.search(problem) for problem in problems)  # each names its fix
    root = "" if dataset_info(name).embedded else real_data[name].data["root"]
    sets = [s.replace("=DIR", f"={root}") for problem in problems for s in SET.findall(problem)]
    assert ("data.root=" + root in sets) == (not dataset_info(name).embedded)
    assert spec_problems(MU_ABLATION, [f"data.dataset={name}", *sets]) == []


def test_a_grid_of_datasets_is_told_to_leave_their_attributes_to_each(real_data):
    problems = spec_problems(MU_ABLATION, ["data.dataset=[glyphs,svhn]"])
    assert problems[:3] == [
        "`data.target`: svhn has no target attribute `shape`; its target attributes: class. "
        "Add `--set data.target=null` (each dataset's own).",
        "`data.group`: svhn has no group attribute `style`; its group attributes: class. "
        "Add `--set data.group=null` (each dataset's own).",
        "`data.test_fraction` is 0.65, but svhn ships its own test set, which is the test split. "
        "Add `--set data.test_fraction=null`."]
    sets = ["data.target=null", "data.group=null", "data.test_fraction=null", f"data.root={real_data['svhn'].data['root']}"]
    assert spec_problems(MU_ABLATION, ["data.dataset=[glyphs,svhn]", *sets]) == []
    # a grid's own value is changed in the grid: no `--set` to add
    assert spec_problems(MU_ABLATION, ["data.target=[shape,class]"]) == [
        "`sweep.grid.data.target`: glyphs has no target attribute `class`; its target attributes: shape."]


def test_keys_only_other_datasets_read_are_ignored_with_a_note(real_data):
    paper = ROOT / "sweeps" / "paper" / "utkface_age_snl.yaml"  # sets data.age_bins and data.image_size
    spec = load_spec(paper, ["data.dataset=svhn", "data.target=class", "data.group=class",
                             f"data.root={real_data['svhn'].data['root']}"])
    assert check_spec(spec, spec.grid_points()) == [
        "note: `data.age_bins` is read by utkface only; svhn ignores it.",
        "note: `data.image_size` is read by imagefolder_csv and utkface only; svhn ignores it."]
    spec = load_spec(paper, [f"data.root={real_data['utkface'].data['root']}"])
    assert check_spec(spec, spec.grid_points()) == []  # its own dataset reads both
    spec = load_spec(MU_ABLATION, ["data.image_size=[16,32]"])  # a grid's key is a key the spec sets
    assert check_spec(spec, spec.grid_points()) == [
        "note: `data.image_size` is read by imagefolder_csv and utkface only; glyphs ignores it."]
