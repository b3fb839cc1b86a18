"""`fairsweep gc`: what no sweep or trial record on the storage refers to is listed and removed; what one
refers to stays and is reused as it was; nothing is removed while a sweep runs."""

import shutil

import torch

from conftest import fairsweep_cli
from fairsweep.data import cache as data_cache
from fairsweep.spec import validate_spec
from fairsweep.sweep.gc import find_garbage, sweep_running, write_manifest
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial

NO_DIAGNOSTICS = {"grad_norms": False, "margins": False, "hessian": False, "bound": False}


def storage_with_garbage(tmp_path, tiny_raw):
    """A storage holding one finished trial of a sweep (its manifest written), a second sweep's planned but
    never-run trial, and every kind of garbage; returns (storage, the finished trial, its record)."""
    tiny_raw["diagnostics"] = NO_DIAGNOSTICS
    tiny_raw["sweep"] = {"grid": {"finetune.mu": [0.0, 0.01]}}
    plan = make_plan(validate_spec(tiny_raw))
    storage = tmp_path / "runs"
    store = StageStore(storage)
    torch.set_num_threads(1)
    record = run_trial(plan.trials[0], store)
    write_manifest(storage, "sweep-a", "a", plan, data_cache.TOUCHED | {"kept.pt"})  # as the driver does
    for name in ("kept.pt", "stale.pt"):
        (storage / "data-cache" / name).write_bytes(b"x" * 10)
    orphan = storage / "stages" / "finetune" / "finetune-0000000000000000"
    shutil.copytree(store.path(plan.trials[0].final), orphan)  # a stage nothing refers to
    (storage / "locks").mkdir(exist_ok=True)
    (storage / "locks" / f"{orphan.name}.lock").write_text("")
    (storage / "checkpoints").mkdir(exist_ok=True)
    (storage / "checkpoints" / f"{plan.trials[0].final.id}.pt").write_bytes(b"x")  # of a stored stage
    (storage / "checkpoints" / f"{plan.trials[1].final.id}.pt").write_bytes(b"y")  # of a planned one: resumable
    (storage / "tune" / "a-20261202-000000").mkdir(parents=True)
    (storage / "tmp" / "half-stage").mkdir(parents=True)
    return storage, plan.trials[0], record


def test_gc_lists_and_removes_exactly_what_nothing_refers_to(tmp_path, tiny_raw):
    storage, trial, record = storage_with_garbage(tmp_path, tiny_raw)
    garbage = find_garbage(storage)
    names = {category: sorted(p.name for p in paths) for category, paths in garbage.paths.items()}
    assert names == {"stages": ["finetune-0000000000000000"], "checkpoints": [f"{trial.final.id}.pt"],
                     "data-cache": ["stale.pt"], "tune": ["a-20261202-000000"],
                     "leftovers": ["finetune-0000000000000000.lock", "half-stage"]}

    listed = fairsweep_cli("gc", "--storage", str(storage), "--dry-run", cwd=tmp_path)
    assert listed.returncode == 0 and "6 item(s) would be removed (dry run: nothing removed)" in listed.stdout
    assert find_garbage(storage).total == 6  # a dry run removes nothing
    removed = fairsweep_cli("gc", "--storage", str(storage), cwd=tmp_path)
    assert removed.returncode == 0 and "removed 6 item(s); trial records are kept" in removed.stdout
    assert find_garbage(storage).total == 0
    assert (storage / "data-cache" / "kept.pt").is_file() and (storage / "trials" / f"{trial.id}.json").is_file()
    again = run_trial(trial, StageStore(storage))  # every stage it refers to is still there, whole
    assert again.trained == {"base": False, "linearize": False, "finetune": False}
    assert again.metrics == record.metrics


def test_a_trial_record_alone_keeps_its_stages(tmp_path, tiny_raw):
    storage, trial, _ = storage_with_garbage(tmp_path, tiny_raw)
    (storage / "sweeps" / "sweep-a.json").unlink()  # a sweep run before manifests existed
    stages = {p.name for p in find_garbage(storage).paths["stages"]}
    assert stages == {"finetune-0000000000000000"} and not set(trial.stages[k].id for k in trial.stages) & stages


def test_gc_removes_nothing_while_a_sweep_runs(tmp_path, tiny_raw):
    storage, _, _ = storage_with_garbage(tmp_path, tiny_raw)
    with sweep_running(storage):  # what the driver holds from pre-flight to its end
        refused = fairsweep_cli("gc", "--storage", str(storage), cwd=tmp_path)
        listed = fairsweep_cli("gc", "--storage", str(storage), "--dry-run", cwd=tmp_path)
    assert refused.returncode == 2 and "a sweep is running on the storage" in " ".join(refused.stderr.split())
    assert listed.returncode == 0 and find_garbage(storage).total == 6


def test_the_manifest_accumulates_and_names_the_data_the_preflight_touched(tmp_path, tiny_raw):
    from fairsweep.sweep.preflight import preflight

    tiny_raw["sweep"] = {"grid": {"finetune.mu": [0.0, 0.01]}}
    spec = validate_spec(tiny_raw)
    data_cache.TOUCHED.clear()
    checked = preflight(spec, tmp_path, None)
    entries = {p.name for p in (tmp_path / "data-cache").glob("*.pt")}
    assert entries and entries <= data_cache.TOUCHED
    write_manifest(tmp_path, "h", "tiny", checked.plan, data_cache.TOUCHED)
    write_manifest(tmp_path, "h", "tiny", make_plan(validate_spec({**tiny_raw, "seed": 5})), set())
    content = (tmp_path / "sweeps" / "h.json").read_text()
    assert all(t.final.id in content for t in checked.plan.trials) and all(e in content for e in entries)
    assert find_garbage(tmp_path).total == 0


def test_a_long_results_table_prints_its_best_and_worst_rows_and_where_the_whole_is(tmp_path):
    import pandas as pd

    from fairsweep.cli import SCREEN_ROWS, _screenful

    table = pd.DataFrame({"linearize.budget": range(100), "worst_group_acc_mean": [(i * 37) % 100 / 100
                                                                                  for i in range(100)]})
    title, shown = _screenful(table, "big", tmp_path / "big.csv")
    values = list(shown["worst_group_acc_mean"])
    assert len(shown) == SCREEN_ROWS and values[:2] == [0.99, 0.98] and values[-2:] == [0.01, 0.0]
    assert f"of 100; the whole table is {tmp_path / 'big.csv'}" in title and "lowest worst_group_acc" in title
    short = table.head(SCREEN_ROWS)
    assert _screenful(short, "small", None) == ("small: mean ± std over seeds", short)
