"""Group metrics against fairlearn's MetricFrame, and the trial metric contract of docs/metrics.md."""

import math

import numpy as np
import pytest
import torch
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score

from fairsweep.metrics.groups import GroupMetrics, group_accuracy, relative_drop, safe_key, trial_metrics
from fairsweep.metrics.values import key_collisions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_accuracy_equals_fairlearn(seed):
    rng = np.random.default_rng(seed)
    n, names = 500, ("white", "black", "asian", "indian", "other")
    y = rng.integers(0, 4, n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, 4, n))
    g = rng.choice(len(names), n, p=[0.6, 0.2, 0.1, 0.07, 0.03])
    ours = group_accuracy(torch.as_tensor(pred), torch.as_tensor(y), torch.as_tensor(g), names)
    frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=[names[i] for i in g])
    assert ours.overall == pytest.approx(frame.overall)
    for name, value in frame.by_group.items():
        assert ours.by_group[name] == pytest.approx(value)
    assert ours.difference() == pytest.approx(frame.difference(method="between_groups"))
    assert ours.group_min() == pytest.approx(frame.group_min())
    assert sum(ours.counts.values()) == n


def test_trial_metrics_contract():
    base = group_accuracy(torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0, 1, 1, 0, 0]), torch.tensor([0, 0, 1, 1, 1]),
                          ("maj", "min"))
    final = group_accuracy(torch.tensor([0, 1, 0, 0, 1]), torch.tensor([0, 1, 1, 0, 0]), torch.tensor([0, 0, 1, 1, 1]),
                           ("maj", "min"))
    m = trial_metrics(final, base, relu_count=50, base_relu_count=200, param_dist=1.5)
    assert m["acc"] == pytest.approx(0.6) and m["group_acc/maj"] == 1.0 and m["group_acc/min"] == pytest.approx(1 / 3)
    # base: maj 1.0, min 2/3 -> drops 0 % and (2/3 − 1/3)/(2/3)·100 = 50 %
    assert m["group_drop_pct/maj"] == 0.0 and m["group_drop_pct/min"] == pytest.approx(50.0)
    assert m["drop_gap_pct"] == pytest.approx(50.0)
    assert m["acc_gap"] == pytest.approx(2 / 3) and m["worst_group_acc"] == pytest.approx(1 / 3)
    assert m["relu_count"] == 50 and m["relu_fraction"] == 0.25 and m["param_dist"] == 1.5


def test_drop_is_nan_not_an_error_when_base_got_a_group_all_wrong():
    base = group_accuracy(torch.tensor([1, 0]), torch.tensor([0, 0]), torch.tensor([0, 1]), ("a", "b"))
    final = group_accuracy(torch.tensor([0, 0]), torch.tensor([0, 0]), torch.tensor([0, 1]), ("a", "b"))
    m = trial_metrics(final, base, 1, 1, 0.0)
    assert math.isnan(m["group_drop_pct/a"]) and m["group_drop_pct/b"] == 0.0 and m["drop_gap_pct"] == 0.0


def test_safe_key_keeps_plain_names_and_gives_every_other_name_a_key_of_its_own():
    from mlflow.utils.validation import _validate_metric_name  # the check MLflow applies to every logged key

    assert safe_key("white") == "white" and safe_key("18-64") == "18-64" and safe_key("g.1_a-b") == "g.1_a-b"
    assert safe_key("18-64 yrs (adult)").startswith("18-64_yrs__adult_-")
    names = ["a b", "a_b", "a/b", "a\tb", "é", "ü", "../x", "./x", ".", "..", "x" * 300, "x" * 301, "60+", "60_"]
    keys = [safe_key(n) for n in names]
    assert len(set(keys)) == len(names)  # injective
    assert all(len(k) <= 64 for k in keys) and all(safe_key(n) == k for n, k in zip(names, keys))  # stable
    for key in keys:
        for prefix in ("group_acc", "group_size/train", "finetune/multiplier"):
            _validate_metric_name(f"{prefix}/{key}")  # raises where MLflow would refuse it
    assert key_collisions(names) == [] and key_collisions(["a b", safe_key("a b")]) == [("a b", safe_key("a b"))]


def test_two_groups_with_the_same_safe_form_keep_their_own_metrics():
    final = GroupMetrics(0.5, {"a b": 1.0, "a_b": 0.0}, {"a b": 5, "a_b": 5})
    base = GroupMetrics(0.5, {"a b": 0.5, "a_b": 0.5}, {"a b": 5, "a_b": 5})
    m = trial_metrics(final, base, relu_count=10, base_relu_count=20, param_dist=0.0)
    assert m["group_acc/a_b"] == 0.0 and m[f"group_acc/{safe_key('a b')}"] == 1.0
    assert m["group_drop_pct/a_b"] == 100.0 and m[f"group_drop_pct/{safe_key('a b')}"] == -100.0


def test_worst_group_keys_and_relative_drop():
    rng = np.random.default_rng(7)
    names = ("a", "b c", "d")
    y, g = rng.integers(0, 2, 300), rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.8, y, 1 - y)
    ours = group_accuracy(torch.as_tensor(pred), torch.as_tensor(y), torch.as_tensor(g), names)
    frame = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred, sensitive_features=[names[i] for i in g])
    assert ours.worst_group() == frame.by_group.idxmin()
    assert ours.worst_group(higher_is_better=False) == frame.by_group.idxmax()
    assert ours.keyed("group_acc") == {f"group_acc/{safe_key(n)}": pytest.approx(v) for n, v in frame.by_group.items()}
    # Figure 9's relative drop: (reference − other) / reference × 100, per group and overall
    reference = GroupMetrics(0.8, {"a": 0.5, "b": 1.0}, {"a": 1, "b": 1})
    other = GroupMetrics(0.9, {"a": 0.6, "b": 0.9}, {"a": 1, "b": 1})
    drop = relative_drop(reference, other)
    assert drop.by_group == pytest.approx({"a": -20.0, "b": 10.0}) and drop.overall == pytest.approx(-12.5)
