"""The embedded datasets: imbalance, seeded stratified splits."""

import pytest
import torch

from fairsweep.data import dataset_info, list_datasets, load_splits
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


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_dataset_loads_and_splits(name):
    cfg = DataConfig(dataset=name)
    data = dataset_info(name).load(cfg)
    assert data.x.dtype == torch.float32 and data.y.dtype == data.g.dtype == torch.int64
    assert len(data.x) == len(data.y) == len(data.g) > 0 and torch.isfinite(data.x).all()
    assert 0 <= int(data.y.min()) and int(data.y.max()) < len(data.class_names)
    assert 0 <= int(data.g.min()) and int(data.g.max()) < len(data.group_names)
    splits = load_splits(cfg, seed=3)
    assert sum(len(p) for p in (splits.train, splits.val, splits.test)) == len(data)
    for part in (splits.train, splits.val, splits.test):  # every group in every split
        assert all(n > 0 for n in part.group_sizes().values())


def test_toy2d_has_a_small_minority_beyond_a_nonlinear_boundary():
    data = dataset_info("toy2d").load(DataConfig(dataset="toy2d"))
    share = float(data.y.float().mean())
    assert data.x.shape == (2000, 2) and 0.05 < share < 0.2
    # not linearly separable: a linear classifier leaves errors
    from sklearn.linear_model import LogisticRegression

    assert LogisticRegression().fit(data.x.numpy(), data.y.numpy()).score(data.x.numpy(), data.y.numpy()) < 0.99
