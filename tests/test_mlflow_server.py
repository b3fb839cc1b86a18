"""A tiny sweep logged to a real `mlflow server` on 127.0.0.1, read back through its REST API as the UI reads it:
runs page by page, parent and children, params and metrics, datasets, true times; models by `models:/`;
the Model Registry after `pareto --register`; nothing duplicated by a resume."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch

from conftest import DIGITS_MU_ABLATION, TINY_OVERRIDES, fairsweep_cli
from fairsweep.data import load_splits
from fairsweep.spec import load_spec
from fairsweep.sweep.records import trial_record_path
from fairsweep.sweep.store import StageStore, StoredStage

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` as a user starts one (SQLite store, artifacts proxied), on a port of its own."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.read() == b"OK":
                        break
            except OSError:
                pass
            assert process.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not answer in 180 s"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def rest(url: str, path: str, body: dict | None = None, **query) -> dict:
    """One call of MLflow's REST API (POST with a JSON body, or GET with a query), as the UI makes it."""
    address = f"{url}/api/2.0/mlflow/{path}"
    if body is None:
        address += "?" + "&".join(f"{k}={urllib.request.quote(str(v))}" for k, v in query.items())
        request = urllib.request.Request(address)
    else:
        request = urllib.request.Request(address, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def search_all(url: str, path: str, key: str, body: dict) -> tuple[list[dict], int]:
    """Every result of a paged search (`runs/search`, `logged-models/search`), following `next_page_token`;
    and how many pages it took."""
    found, token, pages = [], None, 0
    while True:
        page = rest(url, path, {**body, **({"page_token": token} if token else {})})
        found.extend(page.get(key, []))
        pages += 1
        token = page.get("next_page_token")
        if not token:
            return found, pages


@pytest.fixture(scope="module")
def swept(server, tmp_path_factory, local_ray):
    """The reduced digits µ-ablation (4 trials) logged to the server with every model, then re-run."""
    tmp_path = tmp_path_factory.mktemp("served")
    args = ["run", str(DIGITS_MU_ABLATION), "--storage", "runs"]
    for item in [*TINY_OVERRIDES, f"tracking.uri={server}", "tracking.log_models=all"]:
        args += ["--set", item]
    first = fairsweep_cli(*args, cwd=tmp_path)
    second = fairsweep_cli(*args, cwd=tmp_path)
    experiment = rest(server, "experiments/get-by-name", experiment_name="digits_mu_ablation")["experiment"]
    return tmp_path, first, second, experiment["experiment_id"]


def test_the_sweeps_runs_read_through_the_rest_api_page_by_page(server, swept):
    tmp_path, first, second, experiment = swept
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0 and "4/4 trials finished (4 from earlier runs)" in second.stdout
    runs, pages = search_all(server, "runs/search", "runs", {"experiment_ids": [experiment], "max_results": 2})
    assert pages == 3 and len(runs) == 5  # more runs than a page holds; the resume duplicated none
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    (parent,) = [run["info"]["run_id"] for run, t in zip(runs, tags) if t["fairsweep.role"] == "sweep"]
    children = [(run, t) for run, t in zip(runs, tags) if t["fairsweep.role"] == "trial"]
    assert len(children) == 4 and all(t["mlflow.parentRunId"] == parent for _, t in children)
    for run, _ in children:
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert {"finetune.mu", "linearize.budget", "data.dataset"} <= set(params)
        assert {"acc", "worst_group_acc", "drop_gap_pct", "relu_count"} <= set(metrics)
        contexts = sorted(next(t["value"] for t in d["tags"] if t["key"] == "mlflow.data.context")
                          for d in run["inputs"]["dataset_inputs"])
        assert contexts == ["test", "train", "val"]
        record = json.loads(trial_record_path(tmp_path / "runs", _trial(run)).read_text())
        info = run["info"]
        assert int(info["start_time"]) == int(record["timing"]["started"] * 1000)
        assert int(info["end_time"]) - int(info["start_time"]) == pytest.approx(record["timing"]["seconds"] * 1000, abs=1)


def _trial(run: dict) -> str:
    return next(t["value"] for t in run["data"]["tags"] if t["key"] == "fairsweep.trial_id")


def test_each_trials_model_is_logged_once_and_loads_by_models_uri_from_the_server(server, swept):
    tmp_path, _, _, experiment = swept
    models, _ = search_all(server, "logged-models/search", "models", {"experiment_ids": [experiment], "max_results": 2})
    assert len(models) == 4  # one per trial, after the resume too
    mlflow.set_tracking_uri(server)
    model = models[0]
    tags = {t["key"]: t["value"] for t in model["info"]["tags"]}
    loaded = mlflow.pytorch.load_model(f"models:/{model['info']['model_id']}")
    test = load_splits(load_spec(DIGITS_MU_ABLATION, TINY_OVERRIDES).data, seed=0).test
    mean, std = test.standardized
    stored = StageStore(tmp_path / "runs").load_model(StoredStage(tags["fairsweep.stage_id"]))
    with torch.no_grad():
        assert torch.equal(loaded(torch.round(test.x * std + mean)), stored(test.x))


def test_pareto_register_fills_the_registry_once(server, swept):
    tmp_path, *_ = swept
    args = ["pareto", str(DIGITS_MU_ABLATION), "--storage", "runs", "--register", "served-front"]
    for item in [*TINY_OVERRIDES, f"tracking.uri={server}"]:
        args += ["--set", item]
    for _ in range(2):
        result = fairsweep_cli(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    assert rest(server, "registered-models/get", name="served-front")["registered_model"]["name"] == "served-front"
    versions = rest(server, "model-versions/search", filter="name='served-front'")["model_versions"]
    assert versions and len({v["run_id"] for v in versions}) == len(versions)  # the second call added none
    assert all(v["source"].startswith("models:/m-") for v in versions)
    assert Path(tmp_path / "digits_mu_ablation-pareto.png").stat().st_size > 0
