"""Overhead of `fairsweep run` (Ray Tune with one worker, MLflow logging) against a bare Python loop
calling `run_trial` for the same trials on a fresh store.

Both run the same stages (training, measuring, diagnostics) with one torch thread, by default the
digits µ-ablation as shipped (`sweeps/digits_mu_ablation.yaml`: 3 seeds × 3 budgets × 4 µ, 36 trials of a few
seconds; `--short` shortens the trials as in `stage_reuse.py`, `--set` changes the grid), and both
start one fresh Python process that imports torch and trains every trial:

- the baseline is `bare_loop.py`, a script of its own, timed from its first line to the end of its
  loop: its imports, torch's first-use costs (the first `use_deterministic_algorithms` imports
  torch's compiler stack, ~0.7 s here) and the trials. Its store's data cache is filled before it
  starts, as the sweep's driver fills its own in the pre-flight check. The same script then runs
  the loop again, warm, on another store: that figure, with nothing of a process's start in it, is
  printed too, with the sweep's ratio to it.
- the sweep is `run_sweep` with `sweep.max_concurrent_trials: 1` in this process: the pre-flight
  check (data loaded, splits cached), the MLflow run, Tune's set-up, the trial actor's start (a new
  Ray worker process importing Ray Tune, torch and fairsweep), Tune's scheduling, MLflow logging of
  every trial (params, metrics, curves, the model) and the results table.

One-time costs come before the timings and are printed on their own lines: Ray's start-up, and the
creation of the MLflow database (each sweep then logs to it in an experiment of its own). Prints
the median of each over repeats (interleaved, after a warm-up round), the ratios, measured in this
run, and where the sweep's time went, from the trial records' start times and durations: before
the first trial started, inside `run_trial`, between the trials and after the last.

With `--command`, each round also runs the command a user types, `fairsweep run SPEC`, in a new
process, timed from its start to its exit: the CLI's imports, its own local Ray's start and
shutdown, the sweep, the process's exit; printed against the bare loop's process timed the same
way (its wall time, less the warm loop's).

    python benchmarks/sweep_overhead.py [--repeats 1] [--short] [--command] [--set seed=[0,1,2] ...]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.driver import run_sweep
from fairsweep.sweep.preflight import check_plan
from fairsweep.tracking import SweepTracking
from sweep_setup import (QUIET, ablation_spec, create_tracking_db, fresh_storage, load_average, start_local_ray,
                         sweep_arguments, with_tracking)
from timing import interleaved_medians

BARE_LOOP = Path(__file__).with_name("bare_loop.py")
PARTS = ("bare", "bare imports", "bare inside", "bare command", "warm", "warm inside", "sweep", "before", "inside",
         "between", "after", "command")


def main() -> None:
    args = sweep_arguments(__doc__, {"short": "shorter trials (fewer epochs)",
                                     "command": "also time `fairsweep run` as a new process, start to exit"})
    spec = ablation_spec(["sweep.max_concurrent_trials=1", "resources.cpus_per_trial=1", *args.overrides], args.short)
    plan = make_plan(spec)
    spec_file = fresh_storage("spec") / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    parts: dict[str, list[float]] = {key: [] for key in PARTS}

    def bare(round_: int) -> None:
        stores = [fresh_storage("loop"), fresh_storage("loop-warm")]
        for store in stores:  # what the sweep's driver does before its trials start: data loaded, splits cached
            check_plan(plan, None, storage=store)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, str(BARE_LOOP), str(spec_file), *map(str, stores)], check=True,
                             capture_output=True, text=True)
        wall = time.perf_counter() - started
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if round_ > 0:
            for part, key in [("bare", "seconds"), ("bare imports", "imports"), ("bare inside", "inside"),
                              ("warm", "warm_seconds"), ("warm inside", "warm_inside")]:
                parts[part].append(result[key])
            parts["bare command"].append(wall - result["warm_seconds"])

    def sweep(round_: int) -> None:
        started = time.time()
        tracked = with_tracking(spec, tracking_uri)
        outcome = run_sweep(tracked, fresh_storage("sweep"), SweepTracking.of(tracked), console=QUIET)
        ended = time.time()
        assert len(outcome.records) == len(plan.trials) and not outcome.failed, outcome.failed
        if round_ > 0:
            timings = sorted((r.timing.started, r.timing.seconds) for r in outcome.records.values())
            parts["sweep"].append(ended - started)
            parts["before"].append(timings[0][0] - started)
            parts["inside"].append(sum(seconds for _, seconds in timings))
            parts["between"].append(sum(b[0] - a[0] - a[1] for a, b in zip(timings, timings[1:])))
            parts["after"].append(ended - timings[-1][0] - timings[-1][1])

    def command(round_: int) -> None:
        workdir = fresh_storage("command")
        (workdir / "spec.yaml").write_text(with_tracking(spec, tracking_uri).model_dump_json())  # JSON is YAML
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fairsweep", "run", "spec.yaml", "--storage", "runs"], cwd=workdir,
                       check=True, capture_output=True)
        if round_ > 0:
            parts["command"].append(time.perf_counter() - started)

    started = time.perf_counter()
    start_local_ray()
    ray_start = time.perf_counter() - started
    tracking_uri = create_tracking_db()
    db_start = time.perf_counter() - started - ray_start
    runs = {"bare": bare, "sweep": sweep, **({"command": command} if args.command else {})}
    interleaved_medians(runs, args.repeats)  # the parts' own times, not the calls'
    median = {key: statistics.median(values) for key, values in parts.items() if values}
    base = median["bare"]
    print(f"{len(plan.trials)} trials ({spec.sweep.grid}), 1 torch thread, median of {args.repeats} "
          f"after a warm-up round; {load_average()}")
    print(f"  Ray start-up (once, not in the timings below)            {ray_start:7.1f} s")
    print(f"  MLflow database creation (once, not below)               {db_start:7.1f} s")
    print(f"  bare loop, a fresh process (imports, first use, trials)  {base:7.1f} s   1.00x   "
          f"(imports {median['bare imports']:.1f} s, inside run_trial {median['bare inside']:.1f} s)")
    print(f"  the same loop again in that process, warm                {median['warm']:7.1f} s   "
          f"{median['warm'] / base:.2f}x   (inside run_trial {median['warm inside']:.1f} s)")
    print(f"  fairsweep run (1 worker)                                 {median['sweep']:7.1f} s   "
          f"{median['sweep'] / base:.2f}x   (to the warm loop {median['sweep'] / median['warm']:.2f}x)")
    print("  each round, bare loop / warm loop / sweep: " + ", ".join(
        f"{b:.1f} / {w:.1f} / {s:.1f} s" for b, w, s in zip(parts["bare"], parts["warm"], parts["sweep"])))
    if args.command:
        print(f"  the commands, start to exit: python bare_loop.py {median['bare command']:.1f} s, fairsweep run "
              f"{median['command']:.1f} s   {median['command'] / median['bare command']:.2f}x   (each round: "
              + ", ".join(f"{b:.1f} / {c:.1f} s" for b, c in zip(parts["bare command"], parts["command"])) + ")")
    print("  the sweep's time:")
    print(f"    before the first trial started              {median['before']:7.1f} s   (pre-flight check, MLflow "
          "run, Tune's set-up, the worker's start and imports)")
    print(f"    inside run_trial                            {median['inside']:7.1f} s   (the fresh bare loop's "
          f"{median['bare inside']:.1f} s; the first trial in a process pays torch's first-use costs)")
    print(f"    between the trials                          {median['between']:7.1f} s   (Tune's scheduling: "
          f"{median['between'] / max(1, len(plan.trials) - 1):.2f} s a trial)")
    print(f"    after the last trial                        {median['after']:7.1f} s   (logging the last trial, "
          "the results table)")


if __name__ == "__main__":
    main()
