"""The stage store: built once, reused after, exactly one builder under concurrency, atomic writes."""

import multiprocessing as mp
import time

import pytest
import torch

from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.records import StageResult
from fairsweep.sweep.store import StageStore


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
