"""The image data path (per-batch augmentation against a per-image oracle, determinism), the
dataset-specific rules (UTKFace names and bins, the CSV's columns), bad data as clear errors with
exit status 2 before any work, `fairsweep datasets`, and the paper's specs."""

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, fairsweep_cli
from data_fixtures import UTK_MALFORMED
from fairsweep.data import dataset_info, load_splits
from fairsweep.data.pixels import Pixels, crop_and_flip, draw_augmentation
from fairsweep.errors import UserError
from fairsweep.spec import DataConfig, load_spec
from fairsweep.sweep.plan import make_plan

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def images(n=64, h=8, w=6, seed=0):
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def naive_augment(x, shifts, flips, padding):
    """The obvious way, one image at a time: zero-pad, crop at the offsets, mirror, normalise."""
    out = []
    h, w = x.shape[2:]
    mean, std = np.array(MEAN)[:, None, None], np.array(STD)[:, None, None]
    for img, (dy, dx), flip in zip(x.numpy(), shifts.tolist(), flips.tolist()):
        crop = np.pad(img, ((0, 0), (padding, padding), (padding, padding)))[:, dy:dy + h, dx:dx + w]
        if flip:
            crop = crop[:, :, ::-1]
        out.append((crop / 255.0 - mean) / std)
    return torch.tensor(np.stack(out), dtype=torch.float32)


def test_batch_augmentation_matches_the_per_image_oracle():
    x, pixels = images(), Pixels.of(MEAN, STD, padding=4, flip=True)
    out = pixels(x, torch.Generator().manual_seed(7))
    shifts, flips = draw_augmentation(len(x), 4, True, torch.Generator().manual_seed(7))  # the same draws
    assert torch.allclose(out, naive_augment(x, shifts, flips, 4), atol=1e-5)
    assert flips.any() and not flips.all() and set(shifts.flatten().tolist()) == set(range(9))


def test_augmentation_is_seeded_and_evaluation_is_not_augmented():
    x, pixels = images(), Pixels.of(MEAN, STD, padding=2, flip=True)
    a = pixels(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, pixels(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, pixels(x, torch.Generator().manual_seed(2)))
    none = torch.zeros(len(x), 2, dtype=torch.int64), torch.zeros(len(x), dtype=torch.bool)
    assert torch.allclose(pixels(x), naive_augment(x, *none, 0), atol=1e-5)  # no generator: normalise only
    assert torch.equal(crop_and_flip(x, none[0] + 2, none[1], 2), x)  # the centred crop is the image


def test_svhn_crops_but_never_flips(real_data):
    data = dataset_info("svhn").load(DataConfig(**real_data["svhn"].data), None).data
    assert data.pixels.padding == 4 and not data.pixels.flip
    unaugmented = dataset_info("svhn").load(DataConfig(**real_data["svhn"].data, augment=False), None).data
    x = unaugmented.x[:16]
    assert torch.equal(unaugmented.pixels(x, torch.Generator().manual_seed(0)), unaugmented.pixels(x))


def test_training_on_images_is_deterministic(real_data):
    from fairsweep.models import create_model
    from fairsweep.train.loop import predict, train

    data = dataset_info("imagefolder_csv").load(DataConfig(**real_data["imagefolder_csv"].data), None).data

    def run():
        torch.manual_seed(0)
        model = create_model("small_cnn", 3, 3, width=4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def loss_fn(m, x, y, g):
            per_sample = torch.nn.functional.cross_entropy(m(x), y, reduction="none")
            return per_sample.mean(), per_sample

        train(model, data, loss_fn, opt, 2, 32, torch.Generator().manual_seed(3))
        return predict(model, data)

    assert torch.equal(run(), run())


# --- UTKFace and the CSV -------------------------------------------------------------------------

def test_utkface_skips_malformed_names_once_and_bins_ages(real_data):
    cfg = DataConfig(**real_data["utkface"].data)
    splits = load_splits(cfg, seed=0)
    assert len(splits.notes) == 1 and f"skipped {len(UTK_MALFORMED)} file(s)" in splits.notes[0]
    assert UTK_MALFORMED[0] in splits.notes[0]
    total = sum(len(p) for p in (splits.train, splits.val, splits.test))
    assert total == 4 * 2 * 5 * 7  # the two babies are left out: age is used
    assert abs(len(splits.test) / total - 0.2) < 0.01  # the paper's 80/20
    gender_race = dataset_info("utkface").load(DataConfig(**{**cfg.model_dump(), "target": "gender"}), None).data
    assert len(gender_race) == total + 2 and gender_race.class_names == ("male", "female")  # no age: babies kept
    custom = dataset_info("utkface").load(DataConfig(**{**cfg.model_dump(), "age_bins": [10, 40]}), None).data
    assert custom.class_names == ("10-39", "40+")
    assert torch.bincount(custom.y).tolist() == [2 * 2 * 5 * 7, 2 * 5 * 7]  # ages 15 and 30 | 70; 5 is left out


def csv_root(real_data, tmp_path, edit):
    root = tmp_path / "mine"
    shutil.copytree(real_data["imagefolder_csv"].data["root"], root)
    lines = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join(edit(lines)) + "\n")
    return {**copy.deepcopy(real_data["imagefolder_csv"].data), "root": str(root)}


@pytest.mark.parametrize("edit,expect", [
    (lambda lines: [lines[0].replace("site", "place")] + lines[1:],
     "has no column `site` (`data.csv.group_column`); its columns are: file, diagnosis, place"),
    (lambda lines: lines[:4] + [lines[4].rsplit(",", 1)[0] + ",home"] + lines[5:],
     "labels.csv, line 5, column `site`: not one of data.csv.groups (clinic, hospital), got 'home'"),
    (lambda lines: lines[:2] + [",".join(lines[2].split(",")[:2] + [""])] + lines[3:],
     "labels.csv, line 3, column `site`: empty cell"),
    (lambda lines: lines + ["img/nope.png,benign,clinic"], "column `file`: no such image file, got 'img/nope.png'"),
])
def test_csv_problems_name_the_column_and_line(real_data, tmp_path, edit, expect):
    with pytest.raises(UserError) as info:
        load_splits(DataConfig(**csv_root(real_data, tmp_path, edit)), seed=0)
    assert expect in str(info.value)


def csv_pointing(real_data, tmp_path, how):
    """The CSV fixture in tmp_path/mine with its first row's image moved to tmp_path/elsewhere (or, `inside`, to
    mine/moved) and named `how` the CSV reaches it: `../` path, absolute path, a symlink in img/, `img/../`."""
    data = csv_root(real_data, tmp_path, lambda lines: lines)
    mine = Path(data["root"])
    first = (mine / "labels.csv").read_text().splitlines()[1].split(",")[0]
    target = (mine / "moved" if how.endswith("inside") else tmp_path / "elsewhere") / Path(first).name
    target.parent.mkdir()
    (mine / first).rename(target)
    if how in ("symlink", "inside"):
        (mine / first).symlink_to(target)  # the CSV is unchanged: its path is now a link
        named = first
    else:
        named = {"dotdot": f"../elsewhere/{target.name}", "absolute": str(target),
                 "dotdot_inside": f"img/../moved/{target.name}"}[how]
    csv = mine / "labels.csv"
    csv.write_text(csv.read_text().replace(first + ",", named + ",", 1))
    return data, named, target


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_csv_image_outside_the_csvs_folder_is_refused_unless_allowed(real_data, tmp_path, how):
    data, named, target = csv_pointing(real_data, tmp_path, how)
    with pytest.raises(UserError) as info:
        load_splits(DataConfig(**data), seed=0)
    mine = Path(data["root"])
    assert str(info.value) == (
        f"dataset `imagefolder_csv`: {mine / 'labels.csv'}, line 2, column `file`: the image resolves to "
        f"{target.resolve()}, outside the CSV's folder {mine.resolve()}; keep the images inside it, or set "
        f"`data.csv.allow_outside: true` (--set data.csv.allow_outside=true) to read them from anywhere, got {named!r}.")
    data["csv"]["allow_outside"] = True
    loaded = dataset_info("imagefolder_csv").load(DataConfig(**data), None).data
    assert torch.equal(loaded.x[0], real_data["imagefolder_csv"].x[0])  # line 2's image, read where it lies


@pytest.mark.parametrize("how", ["inside", "dotdot_inside"])
def test_a_csv_image_that_resolves_inside_the_csvs_folder_is_read(real_data, tmp_path, how):
    data, _, _ = csv_pointing(real_data, tmp_path, how)
    loaded = dataset_info("imagefolder_csv").load(DataConfig(**data), None).data
    assert torch.equal(loaded.x, real_data["imagefolder_csv"].x)


def test_every_line_outside_is_counted_in_the_one_paragraph(real_data, tmp_path):
    data = csv_root(real_data, tmp_path, lambda lines: lines[:1] + ["../" + line for line in lines[1:]])
    with pytest.raises(UserError) as info:
        load_splits(DataConfig(**data), seed=0)
    rows = len(real_data["imagefolder_csv"].y)
    assert len(info.value.problems) == 1
    assert "line 2, column `file`: the image resolves to" in str(info.value)
    assert f"(as do {rows - 1} other line(s): 3, 4, 5, 6, 7, ...)" in str(info.value)


def test_a_group_left_too_small_is_named_with_its_count(real_data):
    cfg = DataConfig(**real_data["cifar10"].data, imbalance={"minority_classes": [3], "minority_keep": 0.05})
    with pytest.raises(UserError) as info:
        load_splits(cfg, seed=0)
    assert "group `cat` has 4 samples in the val split, fewer than data.min_group_size=5" in str(info.value)
    assert "group `cat` has 2 samples in the test split" in str(info.value)


def test_no_root_names_the_key_and_the_environment_variable(monkeypatch):
    monkeypatch.delenv("FAIRSWEEP_DATA", raising=False)
    with pytest.raises(UserError, match="set data.root .* or the environment variable FAIRSWEEP_DATA"):
        load_splits(DataConfig(dataset="svhn"), seed=0)


def test_the_root_can_come_from_the_environment(real_data, monkeypatch):
    monkeypatch.setenv("FAIRSWEEP_DATA", real_data["svhn"].data["root"])
    assert len(load_splits(DataConfig(dataset="svhn"), seed=0).test) == len(real_data["svhn"].test.y)


# --- through the CLI: exit status 2, nothing trained ------------------------------------------------

def cli(*args, cwd, env=None):
    return fairsweep_cli(*args, cwd=cwd, env=env)


def spec_file(tmp_path, tiny_raw, data):
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = data
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_missing_files_say_where_it_looked_and_where_to_get_them(real_data, tmp_path, tiny_raw):
    root = tmp_path / "data"
    shutil.copytree(real_data["cifar10"].data["root"], root)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    result = cli("validate", str(spec_file(tmp_path, tiny_raw, {"dataset": "cifar10", "root": str(root)})), cwd=tmp_path)
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"dataset `cifar10`: data_batch_3 not found in {root / 'cifar-10-batches-py'}" in text
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in text and "never downloads" in text


def test_cli_corrupt_image_is_named_and_nothing_runs(real_data, tmp_path, tiny_raw):
    root = tmp_path / "faces"
    shutil.copytree(real_data["utkface"].data["root"], root)
    broken = sorted((root / "UTKFace").glob("30_*.jpg"))[3]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    spec = spec_file(tmp_path, tiny_raw, {"dataset": "utkface", "root": str(root), "group": "race"})
    result = cli("run", str(spec), "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert f"dataset `utkface`: cannot read {broken}" in " ".join(result.stderr.split())
    assert not (tmp_path / "runs" / "stages").exists() and not (tmp_path / "mlflow.db").exists()


def test_cli_an_image_outside_the_csvs_folder_is_status_2_before_any_work(real_data, tmp_path, tiny_raw):
    data, named, _ = csv_pointing(real_data, tmp_path, "dotdot")
    spec = spec_file(tmp_path, tiny_raw, data)
    for command in ("validate", "run"):
        result = cli(command, str(spec), "--storage", "runs", cwd=tmp_path)
        text = " ".join(result.stderr.split())
        assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
        assert "labels.csv, line 2, column `file`: the image resolves to" in text and named in text
        assert "--set data.csv.allow_outside=true" in text
    assert not (tmp_path / "runs" / "stages").exists() and not (tmp_path / "mlflow.db").exists()
    result = cli("validate", str(spec), "--set", "data.csv.allow_outside=true", "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_cli_unknown_group_value(real_data, tmp_path, tiny_raw):
    data = csv_root(real_data, tmp_path, lambda lines: lines + [lines[1].rsplit(",", 1)[0] + ",outdoors"])
    result = cli("validate", str(spec_file(tmp_path, tiny_raw, data)), cwd=tmp_path)
    assert result.returncode == 2
    assert "column `site`: not one of data.csv.groups (clinic, hospital), got 'outdoors'" in " ".join(
        result.stderr.split())


def renamed_groups(real_data, tmp_path, names):
    """The CSV dataset with its groups `clinic`, `hospital` renamed to `names`."""
    def edit(lines):
        return [lines[0]] + [line.replace(",clinic", f",{names[0]}").replace(",hospital", f",{names[1]}")
                             for line in lines[1:]]
    data = csv_root(real_data, tmp_path, edit)
    data["csv"]["groups"] = list(names)
    return data


def test_groups_whose_safe_forms_coincide_keep_keys_of_their_own(real_data, tmp_path, tiny_raw):
    result = cli("validate", str(spec_file(tmp_path, tiny_raw, renamed_groups(real_data, tmp_path, ["a b", "a_b"]))),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  a b: " in result.stdout and "  a_b: " in result.stdout


def test_group_names_that_would_share_a_key_are_refused_before_training(real_data, tmp_path, tiny_raw):
    from fairsweep.metrics.values import safe_key

    names = ["a b", safe_key("a b")]  # the second written exactly as the first's key
    result = cli("validate", str(spec_file(tmp_path, tiny_raw, renamed_groups(real_data, tmp_path, names))),
                 cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (f"groups 'a b' and '{names[1]}' would share the MLflow key `{names[1]}`"
            in " ".join(result.stderr.split()))


def test_cli_validate_prints_group_sizes_and_fills_the_cache(real_data, tmp_path, tiny_raw):
    spec = spec_file(tmp_path, tiny_raw, {**real_data["utkface"].data, "target": "race"})
    result = cli("validate", str(spec), "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "data utkface (seed 0), samples per group in train / val / test:" in result.stdout
    assert "white: 37 / 9 / 12" in result.stdout and f"skipped {len(UTK_MALFORMED)} file(s)" in result.stdout
    assert len(list((tmp_path / "runs" / "data-cache").glob("utkface-*.pt"))) == 1


def test_cli_datasets_lists_what_is_found(real_data, tmp_path):
    root = tmp_path / "all"
    root.mkdir()
    (root / "cifar-10-batches-py").symlink_to(Path(real_data["cifar10"].data["root"]) / "cifar-10-batches-py")
    (root / "UTKFace").symlink_to(Path(real_data["utkface"].data["root"]) / "UTKFace")
    result = cli("datasets", cwd=tmp_path, env={"FAIRSWEEP_DATA": str(root)})
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert result.returncode == 0 and "age, gender, race" in rows["utkface"]
    assert "found:" in rows["cifar10"] and "found:" in rows["utkface"] and "embedded" in rows["digits"]
    assert "not found" in rows["svhn"] and "not found" in rows["imagefolder_csv"]


# --- a trial on images ---------------------------------------------------------------------------

def test_a_trial_on_images_is_deterministic_and_decodes_into_the_storage(real_data, tmp_path, tiny_raw, monkeypatch):
    from fairsweep.data import imagefolder_csv
    from fairsweep.spec import validate_spec
    from fairsweep.sweep.store import StageStore
    from fairsweep.sweep.trial import run_trial

    decodes = []
    real = imagefolder_csv.decode
    monkeypatch.setattr(imagefolder_csv, "decode", lambda *a: decodes.append(1) or real(*a))
    tiny_raw["data"] = {**real_data["imagefolder_csv"].data, "min_group_size": 5}
    trial = make_plan(validate_spec(tiny_raw)).trials[0]
    decodes.clear()  # planning without a storage read the images once, for the content digest of the stages' ids
    torch.set_num_threads(1)
    first, again = run_trial(trial, StageStore(tmp_path / "a")), run_trial(trial, StageStore(tmp_path / "b"))
    assert first.metrics == again.metrics and first.input_shape == [3, 12, 12]
    assert first.group_sizes["test"] == {"clinic": 15, "hospital": 15}
    assert len(list((tmp_path / "a" / "data-cache").glob("imagefolder_csv-*.pt"))) == 1 and len(decodes) == 2
    run_trial(trial, StageStore(tmp_path / "a"))  # stages and data both reused
    assert len(decodes) == 2


# --- the paper's specs ---------------------------------------------------------------------------

PAPER_SPECS = sorted((ROOT / "sweeps" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.stem)
def test_paper_specs_are_valid_on_fixture_data(path, real_data):
    """Each spec validates, plans the paper's grid, and passes the pre-training checks (data found,
    split with every group large enough, budgets within the model's ReLUs) on a fixture of its dataset."""
    from fairsweep.sweep.preflight import check_plan

    dataset = yaml.safe_load(path.read_text())["data"]["dataset"]
    spec = load_spec(path, [f"data.root={real_data[dataset].data['root']}"])
    plan = make_plan(spec)
    # the paper (Appendix C.1): base models train 160 epochs for SNL, 200 for DeepReDuce; 10 seeds
    assert spec.base.epochs == (200 if spec.linearize.method == "deepreduce" else 160)
    assert len(spec.sweep.grid["seed"]) == 10
    assert len(plan.trials) == np.prod([len(v) for v in spec.sweep.grid.values()])
    summaries = check_plan(plan, None)
    assert summaries and all(min(s["test"].values()) >= spec.data.min_group_size
                             for s in (d.group_sizes for d in summaries))
    # SNL's ResNets are the SNL authors' (no stem ReLU: budgets are fractions of 491,520 / 901,120 ReLUs);
    # DeepReDuce's keep it, as its published configurations count it
    archs = spec.sweep.grid.get("model.arch", [spec.model.arch])
    resnets = spec.linearize.method == "snl" and set(archs) <= {"resnet18", "resnet34"}
    assert spec.model.stem_relu is (False if resnets else None)


def test_the_papers_utkface_race_snl_specs_cover_its_four_architectures_with_one_recipe():
    specs = [load_spec(ROOT / "sweeps" / "paper" / f"{name}.yaml") for name in ("utkface_race_snl",
                                                                               "utkface_race_snl_vgg_wrn")]
    assert [s.sweep.grid["model.arch"] for s in specs] == [["resnet18", "resnet34"], ["vgg19", "wrn22_8"]]
    recipe = [s.model_dump(exclude={"name": True, "model": True, "sweep": {"grid": {"model.arch"}}}) for s in specs]
    assert recipe[0] == recipe[1]
    assert specs[0].model.width == 64 and specs[1].model.width is None  # VGG-19 and WRN-22-8 at their own widths
