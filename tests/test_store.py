"""The stage store: built once, reused after, exactly one builder under concurrency, atomic writes; a
damaged stage is moved aside and trained again; a stage names who trained it."""

import json
import multiprocessing as mp
import os
import re
import socket
import time

import pytest
import torch

from fairsweep.errors import DamagedFileWarning
from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.preflight import describe_plan
from fairsweep.sweep.records import StageResult
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial


def _stage(tiny_raw):
    return make_plan(validate_spec(tiny_raw)).trials[0].stages["base"]


def test_built_once_then_reused(tmp_path, tiny_raw):
    store, stage = StageStore(tmp_path), _stage(tiny_raw)
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(3.0)}, StageResult(history=[{"loss": 1.0}, {"loss": 2.0}])

    first = store.get_or_build(stage, build)
    second = store.get_or_build(stage, build)
    assert first.trained and not second.trained and len(calls) == 1
    assert torch.equal(second.state["w"], torch.arange(3.0))
    assert second.result == StageResult(history=[{"loss": 1.0}, {"loss": 2.0}])


def test_a_failed_build_leaves_nothing(tmp_path, tiny_raw):
    store, stage = StageStore(tmp_path), _stage(tiny_raw)

    def build():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.get_or_build(stage, build)
    assert not store.has(stage) and not store.path(stage).exists()
    assert store.get_or_build(stage, lambda: ({}, StageResult(selected={"ok": 1}))).trained  # the next caller builds it


def _race(root, raw, counter, barrier):
    stage = _stage(raw)
    barrier.wait()

    def build():
        with counter.get_lock():
            counter.value += 1
        time.sleep(0.5)  # long enough that every other process arrives while it trains
        return {"w": torch.ones(2)}, StageResult(selected={"by": "one"})

    out = StageStore(root).get_or_build(stage, build)
    assert out.result == StageResult(selected={"by": "one"})


def test_exactly_one_of_many_processes_trains_a_missing_stage(tmp_path, tiny_raw):
    ctx = mp.get_context("spawn")
    counter, barrier = ctx.Value("i", 0), ctx.Barrier(4)
    procs = [ctx.Process(target=_race, args=(tmp_path, tiny_raw, counter, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert counter.value == 1


def _hold_the_lock(root, raw, holding):
    def build():
        holding.set()
        time.sleep(600)  # a trainer that hangs until killed

    StageStore(root).get_or_build(_stage(raw), build)


def _take_over(root, raw, counter, results):
    def build():
        with counter.get_lock():
            counter.value += 1
        return {"w": torch.zeros(1)}, StageResult(selected={"by": "taker"})

    out = StageStore(root).get_or_build(_stage(raw), build)
    results.put((out.trained, out.waited, out.result))


def test_a_trainer_killed_while_holding_the_lock_is_taken_over_by_a_waiting_trial(tmp_path, tiny_raw):
    ctx = mp.get_context("spawn")
    holding, counter, results = ctx.Event(), ctx.Value("i", 0), ctx.Queue()
    trainer = ctx.Process(target=_hold_the_lock, args=(tmp_path, tiny_raw, holding))
    trainer.start()
    assert holding.wait(120)
    waiter = ctx.Process(target=_take_over, args=(tmp_path, tiny_raw, counter, results))
    waiter.start()
    time.sleep(1.0)  # the waiter blocks on the lock meanwhile
    assert waiter.is_alive() and counter.value == 0
    trainer.kill()  # SIGKILL: the kernel releases its lock
    trainer.join(60)
    trained, waited, result = results.get(timeout=120)
    waiter.join(60)
    assert trained and result == StageResult(selected={"by": "taker"}) and counter.value == 1 and waited > 0
    assert StageStore(tmp_path).load(_stage(tiny_raw)).result == StageResult(selected={"by": "taker"})


NO_DIAGNOSTICS = {"grad_norms": False, "margins": False, "hessian": False, "bound": False}


@pytest.mark.parametrize("kind, name", [("base", "model.pt"), ("finetune", "result.json"), ("linearize", "stage.json")])
def test_a_truncated_stage_file_is_moved_aside_and_the_stage_trained_again(tmp_path, tiny_raw, kind, name):
    tiny_raw["diagnostics"] = NO_DIAGNOSTICS
    plan = make_plan(validate_spec(tiny_raw))
    trial, store = plan.trials[0], StageStore(tmp_path)
    torch.set_num_threads(1)
    uninterrupted = run_trial(trial, store)
    stage = trial.stages[kind]
    whole = store.load(stage)
    damaged = store.path(stage) / name
    cut = damaged.read_bytes()[: damaged.stat().st_size // 2]  # what a power loss mid-write left
    damaged.write_bytes(cut)
    assert not store.has(stage) and describe_plan(plan, tmp_path)["stages"][kind]["stored"] == 0  # `validate`

    with pytest.warns(DamagedFileWarning, match=re.escape(f"{store.path(stage)} cannot be read ({name}")):
        again = run_trial(trial, store)
    assert again.trained == {k: k == kind for k in trial.stages} and again.metrics == uninterrupted.metrics
    retrained = store.load(stage)
    assert retrained.result == whole.result
    assert all(torch.equal(retrained.state[key], tensor) for key, tensor in whole.state.items())
    [moved] = (tmp_path / "damaged" / "stages" / kind).iterdir()  # kept to look at
    assert moved.name.startswith(stage.id + ".") and (moved / name).read_bytes() == cut


def test_a_stage_whose_bytes_changed_fails_its_checksum_and_is_built_again(tmp_path, tiny_raw):
    store, stage = StageStore(tmp_path), _stage(tiny_raw)
    store.get_or_build(stage, lambda: ({"w": torch.zeros(64)}, StageResult(selected={"n": 1})))
    model = store.path(stage) / "model.pt"
    flipped = bytearray(model.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # the same size: a disk's fault, not a short write
    model.write_bytes(bytes(flipped))
    assert store.has(stage)  # sizes match: `validate` counts it (a stat per file, no read)
    with pytest.warns(DamagedFileWarning, match="model.pt's sha256 differs"):
        rebuilt = store.get_or_build(stage, lambda: ({"w": torch.ones(64)}, StageResult(selected={"n": 2})))
    assert rebuilt.trained and torch.equal(store.load(stage).state["w"], torch.ones(64))


def test_a_stage_names_who_trained_it(tmp_path, tiny_raw):
    store, stage = StageStore(tmp_path), _stage(tiny_raw)
    before = time.time()
    store.get_or_build(stage, lambda: ({}, StageResult()), trial="trial-x", node="node-1")
    by = json.loads((store.path(stage) / "stage.json").read_text())["trained_by"]
    assert (by["host"], by["pid"], by["trial"], by["node"]) == (socket.gethostname(), os.getpid(), "trial-x", "node-1")
    assert before <= by["time"] <= time.time()
    store.get_or_build(stage, lambda: ({}, StageResult()), trial="trial-y")  # a reuse does not rename the trainer
    assert json.loads((store.path(stage) / "stage.json").read_text())["trained_by"]["trial"] == "trial-x"
