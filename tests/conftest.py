import copy
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MU_ABLATION = ROOT / "sweeps" / "mu_ablation.yaml"

# A spec small enough to train in seconds: the embedded default, shortened.
TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "imbalance": {"minority_classes": [5, 6, 7, 8, 9], "minority_keep": 0.25}},
    "model": {"arch": "small_cnn", "width": 4},
    "base": {"epochs": 3, "lr": 0.05},
    "linearize": {"budget": 0.05, "lr": 0.02, "lambda_init": 1e-2, "lambda_growth": 2.0, "max_epochs": 60},
    "finetune": {"epochs": 2, "lr": 0.01, "mu": 0.0},
}

# the same reduction of mu_ablation.yaml, as CLI overrides (1 seed, 2 budgets, 2 µ, few epochs)
TINY_OVERRIDES = [
    "seed=[0]", "linearize.budget=[0.03,0.1]", "finetune.mu=[0,0.01]", "model.width=8",
    "linearize.lambda_init=0.01", "linearize.lambda_growth=2.0", "finetune.epochs=2",
]


@pytest.fixture
def tiny_raw():
    return copy.deepcopy(TINY)


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    yield


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
