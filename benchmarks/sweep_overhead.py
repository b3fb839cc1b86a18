"""Overhead of `fairsweep run` (Ray Tune with one worker, MLflow logging) against a bare Python loop
calling `run_trial` for the same trials on a fresh store.

Both run the same stages (training, measuring, diagnostics) with one torch thread. The sweep's time
is `run_sweep` with `sweep.max_concurrent_trials: 1`: the pre-flight check (data loaded, splits
cached), Tune's scheduling, the trial actor's start (a new process importing Ray Tune, torch and
fairsweep), MLflow logging of every trial (params, metrics, curves, the model) and the results table.
The bare loop runs in this process, warm. One-time costs come before the timings and are printed on
their own lines: Ray's start-up, and the creation of the MLflow database (each sweep then logs to it
in an experiment of its own). Prints the median of each over repeats (interleaved, after a warm-up
round) and the ratio, measured in this run, and where the sweep's extra time went, from the trial
records' start times and durations: before the first trial started, inside `run_trial`, and between
and after the trials.

    python benchmarks/sweep_overhead.py [--repeats 1] [--set finetune.mu=[0,0.01] ...]
"""

from __future__ import annotations

import statistics
import time

import torch

from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.runner import run_sweep
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial
from sweep_setup import (QUIET, create_tracking_db, fresh_storage, load_average, small_spec, start_local_ray,
                         sweep_arguments, with_tracking)
from timing import interleaved_medians


def main() -> None:
    args = sweep_arguments(__doc__)
    spec = small_spec(["seed=[0,1]", "linearize.budget=[0.03,0.1]", "finetune.mu=[0,0.01,0.05]",
                       "sweep.max_concurrent_trials=1", "resources.cpus_per_trial=1", *args.overrides])
    plan = make_plan(spec)
    torch.set_num_threads(1)  # as the Tune trainable sets for cpus_per_trial 1
    parts: dict[str, list[float]] = {"before": [], "inside": [], "after": [], "bare inside": []}

    def bare_loop(round_: int) -> None:
        store = StageStore(fresh_storage("loop"))
        inside = sum(run_trial(trial, store)["timing"]["seconds"] for trial in plan.trials)
        if round_ > 0:
            parts["bare inside"].append(inside)

    def sweep(round_: int) -> None:
        started = time.time()
        outcome = run_sweep(with_tracking(spec, tracking_uri), fresh_storage("sweep"), console=QUIET)
        ended = time.time()
        assert len(outcome.records) == len(plan.trials) and not outcome.failed, outcome.failed
        if round_ > 0:
            timings = [record["timing"] for record in outcome.records.values()]
            before = min(t["started"] for t in timings) - started
            inside = sum(t["seconds"] for t in timings)
            parts["before"].append(before)
            parts["inside"].append(inside)
            parts["after"].append(ended - started - before - inside)

    started = time.perf_counter()
    start_local_ray()
    ray_start = time.perf_counter() - started
    tracking_uri = create_tracking_db()
    db_start = time.perf_counter() - started - ray_start
    times = interleaved_medians({"bare run_trial loop": bare_loop, "fairsweep run (1 worker)": sweep},
                                args.repeats)
    base = times["bare run_trial loop"]
    part = {name: statistics.median(values) for name, values in parts.items()}
    print(f"{len(plan.trials)} trials ({spec.sweep.grid}), 1 torch thread, median of {args.repeats} "
          f"after a warm-up round; {load_average()}")
    print(f"  Ray start-up (once, not in the timings below)  {ray_start:7.1f} s")
    print(f"  MLflow database creation (once, not below)     {db_start:7.1f} s")
    for name, seconds in times.items():
        print(f"  {name:<45} {seconds:7.1f} s   ratio to the bare loop {seconds / base:5.2f}x")
    print("  the sweep's time:")
    print(f"    before the first trial started              {part['before']:7.1f} s   (pre-flight check, MLflow run, "
          "Tune's set-up, the worker's start and imports)")
    print(f"    inside run_trial                            {part['inside']:7.1f} s   "
          f"(bare loop {part['bare inside']:.1f} s; the worker's first trial pays its process's first-use costs)")
    print(f"    between and after the trials                {part['after']:7.1f} s   (Tune's scheduling, logging the "
          "last trial, the results table)")


if __name__ == "__main__":
    main()
