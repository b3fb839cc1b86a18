"""Datasets: the embedded ones, and a contract every registered dataset passes (imbalance, seeded
stratified splits, the decode cache), the file-backed ones on fixtures in their published formats."""

import copy
import os
import re
import shutil
import sys

import pytest
import torch

from fairsweep.data import dataset_info, list_datasets, load_splits
from fairsweep.data.cache import DataCache
from fairsweep.errors import DamagedFileWarning
from fairsweep.spec import DataConfig, validate_spec


def test_registry_holds_the_embedded_datasets():
    assert {"digits", "toy2d"} <= set(list_datasets())


def test_digits_imbalance_and_split(tiny_raw):
    spec = validate_spec(tiny_raw)
    splits = load_splits(spec.data, seed=0)
    parts = (splits.train, splits.val, splits.test)
    sizes = [torch.bincount(p.y, minlength=10) for p in parts]
    total = sum(sizes)
    # majority classes keep all (~180 each), minority classes 5-9 a quarter
    assert (total[:5] >= 174).all() and ((total[5:] - 0.25 * 180).abs() <= 2).all()
    for s in sizes:  # every split keeps the imbalance (stratified)
        assert s[:5].min() > 2.5 * s[5:].max()
    assert splits.train.x.shape[1:] == (1, 8, 8) and splits.train.x.dtype == torch.float32
    assert torch.equal(splits.train.g, splits.train.y)  # group = class
    n = sum(len(p) for p in parts)
    assert abs(len(splits.test) / n - 0.25) < 0.01 and abs(len(splits.val) / n - 0.15) < 0.01


def test_splits_are_disjoint_and_seeded(tiny_raw):
    spec = validate_spec(tiny_raw)

    def keys(split):
        return {tuple(row.tolist()) for row in split.x.flatten(1)}

    a, b, c = load_splits(spec.data, 0), load_splits(spec.data, 0), load_splits(spec.data, 1)
    assert not keys(a.train) & keys(a.test) and not keys(a.train) & keys(a.val) and not keys(a.val) & keys(a.test)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.test.x.shape == c.test.x.shape and not torch.equal(a.test.x, c.test.x)  # another seed, another split


# --- the contract every registered dataset passes (file-backed ones on fixtures in their published
# format, built by tests/data_fixtures.py) ---------------------------------------------------------

FILE_BACKED = [n for n in list_datasets() if not dataset_info(n).embedded]


def config(name, real_data, **changes) -> DataConfig:
    """The dataset's `data` section: its fixture's for a file-backed one, with `changes`."""
    if dataset_info(name).embedded:
        section = {"dataset": name}
    else:
        assert name in real_data, f"dataset `{name}` needs a fixture in tests/data_fixtures.py"
        section = copy.deepcopy(real_data[name].data)
    return DataConfig(**{**section, **changes})


def parts(loaded):
    return [loaded.data] + ([loaded.test] if loaded.test is not None else [])


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_dataset_loads_and_splits(name, real_data):
    cfg = config(name, real_data, imbalance=None)
    loaded = dataset_info(name).load(cfg, None)
    for data in parts(loaded):
        assert data.y.dtype == data.g.dtype == torch.int64 and len(data.x) == len(data.y) == len(data.g) > 0
        if data.pixels is None:  # embedded: ready inputs
            assert data.x.dtype == torch.float32
        else:  # images: uint8 (N, 3, H, W), normalised per batch
            assert data.x.dtype == torch.uint8 and data.x.ndim == 4 and data.x.shape[1] == 3
        inputs = data.inputs()
        assert inputs.dtype == torch.float32 and inputs.shape == data.x.shape and torch.isfinite(inputs).all()
        assert 0 <= int(data.y.min()) and int(data.y.max()) < len(data.class_names)
        assert 0 <= int(data.g.min()) and int(data.g.max()) < len(data.group_names)
    splits = load_splits(cfg, seed=3)
    assert sum(len(p) for p in (splits.train, splits.val, splits.test)) == sum(len(p) for p in parts(loaded))
    for part in (splits.train, splits.val, splits.test):  # every group in every split
        assert all(n >= cfg.min_group_size for n in part.group_sizes().values())
    if loaded.test is not None:  # the publisher's test set is the test split, untouched
        assert torch.equal(splits.test.x, loaded.test.x) and torch.equal(splits.test.y, loaded.test.y)


@pytest.mark.parametrize("name", FILE_BACKED)
def test_loads_what_the_files_hold(name, real_data):
    """Pixels (layout, channel order), targets and groups against what the fixture wrote."""
    expected = real_data[name]
    loaded = dataset_info(name).load(config(name, real_data), None)
    for data, want in zip(parts(loaded), [expected, expected.test] if expected.test else [expected]):
        assert data.class_names == want.class_names and data.group_names == want.group_names
        assert torch.equal(data.y, want.y) and torch.equal(data.g, want.g)
        assert data.x.shape == want.x.shape
        assert int((data.x.int() - want.x.int()).abs().max()) <= want.pixel_tolerance


@pytest.mark.parametrize("name", list_datasets())
def test_imbalance_keeps_the_configured_share_of_each_class(name, real_data):
    imbalance = {"minority_classes": [0], "minority_keep": 0.6, "majority_keep": 0.9}
    full = dataset_info(name).load(config(name, real_data), None)
    splits = load_splits(config(name, real_data, imbalance=imbalance, min_group_size=1), seed=0)
    if full.test is None:
        pools = [(full.data, (splits.train, splits.val, splits.test))]
    else:  # imbalanced in train and test alike
        pools = [(full.data, (splits.train, splits.val)), (full.test, (splits.test,))]
    for source, kept_in in pools:
        available = torch.bincount(source.y, minlength=len(source.class_names))
        kept = sum(torch.bincount(p.y, minlength=len(source.class_names)) for p in kept_in)
        for c, n in enumerate(available.tolist()):
            keep = 0.6 if c == 0 else 0.9
            assert int(kept[c]) == max(1, round(keep * n)), (c, n)


@pytest.mark.parametrize("name", list_datasets())
def test_splits_are_disjoint_and_deterministic_per_seed(name, real_data):
    cfg = config(name, real_data)

    def keys(part):
        return {row.numpy().tobytes() for row in part.x.flatten(1)}

    a, b, c = load_splits(cfg, 0), load_splits(cfg, 0), load_splits(cfg, 1)
    parts_a = [keys(p) for p in (a.train, a.val, a.test)]
    assert sum(len(k) for k in parts_a) == len(set().union(*parts_a))  # no sample in two splits
    for p, q in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(p.x, q.x) and torch.equal(p.y, q.y) and torch.equal(p.g, q.g)
    assert not torch.equal(a.train.x, c.train.x)  # another seed, another split


def counting(monkeypatch, name) -> list:
    """Count calls of the dataset's `decode` (the one function that reads its source files)."""
    module = sys.modules[dataset_info(name).load.__module__]
    real, calls = module.decode, []

    def decode(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "decode", decode)
    return calls


@pytest.mark.parametrize("name", FILE_BACKED)
def test_second_load_comes_from_the_cache(name, real_data, tmp_path, monkeypatch):
    calls, cache = counting(monkeypatch, name), DataCache(tmp_path / "cache")
    cfg = config(name, real_data)
    first, second = load_splits(cfg, 0, cache), load_splits(cfg, 0, cache)
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob(f"{name}-*.pt"))) == 1
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.g, second.test.g)
    uncached = load_splits(cfg, 0)  # the cache holds exactly what decoding gives
    assert len(calls) == 2 and torch.equal(uncached.val.x, second.val.x)


@pytest.mark.parametrize("name", FILE_BACKED)
def test_a_changed_source_file_invalidates_the_cache(name, real_data, tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(real_data[name].data["root"], root)
    calls, cache = counting(monkeypatch, name), DataCache(tmp_path / "cache")
    cfg = config(name, real_data, root=str(root))
    load_splits(cfg, 0, cache)
    source = root / real_data[name].source
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten a second later
    load_splits(cfg, 0, cache)
    assert len(calls) == 2 and len(list((tmp_path / "cache").glob(f"{name}-*.pt"))) == 2  # a new fingerprint
    load_splits(cfg, 0, cache)
    assert len(calls) == 2


@pytest.mark.parametrize("name", FILE_BACKED)
def test_a_truncated_cache_entry_is_moved_aside_and_decoded_again(name, real_data, tmp_path, monkeypatch):
    calls, cache = counting(monkeypatch, name), DataCache(tmp_path / "data-cache")
    cfg = config(name, real_data)
    whole = load_splits(cfg, 0, cache)
    [entry] = (tmp_path / "data-cache").glob(f"{name}-*.pt")
    cut = entry.read_bytes()[: entry.stat().st_size // 2]  # what a power loss mid-write left
    entry.write_bytes(cut)
    with pytest.warns(DamagedFileWarning, match=re.escape(f"{entry} cannot be read")):
        again = load_splits(cfg, 0, cache)
    assert len(calls) == 2 and torch.equal(again.train.x, whole.train.x) and torch.equal(again.test.g, whole.test.g)
    [moved] = (tmp_path / "damaged" / "data-cache").iterdir()  # beside the cache, in the storage
    assert moved.name.startswith(entry.name + ".") and moved.read_bytes() == cut
    load_splits(cfg, 0, cache)
    assert len(calls) == 2  # the entry decoded again is whole


def test_toy2d_has_a_small_minority_beyond_a_nonlinear_boundary():
    from matplotlib.path import Path as Polygon
    from sklearn.linear_model import LogisticRegression

    from fairsweep.data.embedded import toy2d_boundary

    data = dataset_info("toy2d").load(DataConfig(dataset="toy2d"), None).data
    share = float(data.y.float().mean())
    assert data.x.shape == (8000, 2) and 0.1 < share < 0.2 and data.x.abs().max() <= 1
    assert torch.equal(data.y, dataset_info("toy2d").load(DataConfig(dataset="toy2d"), None).data.y)  # fixed
    # the boundary the figure draws is the one that labels the points: the minority is what lies
    # inside it (an independent point-in-polygon test, on a polyline fine enough that no point lies
    # between it and the curve), and all of it lies inside the sampled square
    curve = toy2d_boundary(7201)
    inside = torch.as_tensor(Polygon(curve.numpy()).contains_points(data.x.numpy()))
    assert torch.equal(inside, data.y.bool()) and curve.abs().max() < 1
    # not linearly separable: a linear classifier does no better than calling every point majority
    fit = LogisticRegression().fit(data.x.numpy(), data.y.numpy())
    assert fit.score(data.x.numpy(), data.y.numpy()) < 1 - share + 0.01


@pytest.mark.parametrize("name", list_datasets())
def test_splits_through_the_cache_equal_the_splits_computed(name, real_data, tmp_path, monkeypatch):
    import sklearn.model_selection

    calls = []
    real = sklearn.model_selection.train_test_split

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sklearn.model_selection, "train_test_split", counted)
    cfg, cache = config(name, real_data), DataCache(tmp_path / "cache")
    computed = load_splits(cfg, 3)
    first_calls = len(calls)
    cached, again = load_splits(cfg, 3, cache), load_splits(cfg, 3, cache)
    assert len(calls) == 2 * first_calls  # the second load through the cache splits nothing
    for part in ("train", "val", "test"):
        for a, b in ((computed, cached), (computed, again)):
            assert torch.equal(getattr(a, part).x, getattr(b, part).x)
            assert torch.equal(getattr(a, part).y, getattr(b, part).y)
            assert torch.equal(getattr(a, part).g, getattr(b, part).g)
    load_splits(cfg, 4, cache)  # another seed is another entry
    assert len(calls) == 3 * first_calls


def test_cached_digits_are_scikit_learns(tmp_path):
    from sklearn.datasets import load_digits

    cache = DataCache(tmp_path)
    data = dataset_info("digits").load(DataConfig(dataset="digits"), cache).data
    assert list(tmp_path.glob("digits-*.pt"))
    bunch = load_digits()
    raw = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1)
    assert torch.equal(data.x, (raw - raw.mean()) / raw.std())
    assert torch.equal(data.y, torch.as_tensor(bunch.target))
    assert torch.equal(dataset_info("digits").load(DataConfig(dataset="digits"), cache).data.x, data.x)


def test_a_trial_on_a_checked_plan_does_not_import_scikit_learn(tiny_raw, tmp_path):
    """The driver's check caches the data and every seed's split, so a trial's worker need not import
    scikit-learn (2 s a process)."""
    import subprocess

    from fairsweep.sweep.plan import make_plan
    from fairsweep.sweep.preflight import check_plan

    spec = validate_spec({**tiny_raw, "sweep": {"grid": {"seed": [0, 1]}}})
    check_plan(make_plan(spec), None, storage=tmp_path)
    code = ("import sys; from fairsweep.spec import Spec; from fairsweep.data import load_splits; "
            "from fairsweep.data.cache import DataCache; "
            f"spec = Spec.model_validate_json({spec.model_dump_json()!r}); "
            f"[load_splits(spec.data, seed, DataCache({str(tmp_path / 'data-cache')!r})) for seed in {spec.sweep.grid['seed']!r}]; "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
