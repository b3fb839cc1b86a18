"""The scale benchmark's machinery at its smallest size (its timings are for the script to print, not for a
test to assert): a real sweep of a few trials, its resume, validate and pareto, measured."""

import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_sweep_scale_measures_a_tiny_sweep(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import sweep_scale

    spec = sweep_scale.spec_for(10)
    grid = spec["sweep"]["grid"]
    assert len(grid["seed"]) * len(grid["finetune.mu"]) == 10
    row = sweep_scale.measure(3, tmp_path)  # asserts its own records and the resume's "3/3 ... from earlier runs"
    assert row["n"] == 3 and 0 < row["trials_own_s"] < row["wall_s"]
    assert row["driver_peak_mb"] > 100 and row["worker_peak_mb"] > 100  # a Python with torch and Ray, each
    assert row["all_peak_mb"] >= max(row["driver_peak_mb"], row["worker_peak_mb"])
    assert row["mlflow_mb"] > 0 and row["storage_mb"] > 0
    assert min(row["resume_s"], row["validate_s"], row["pareto_s"]) > 0
    assert (tmp_path / "front.png").is_file() and sys.modules["sweep_scale"] is sweep_scale
