"""Parallel efficiency of `fairsweep run`: the same sweep with 2 concurrent trials (1 CPU each) against
1, on a local Ray (started once, before the timings).

Efficiency = time with 1 trial at a time / (2 × time with 2 at a time); 1.0 is perfect. The sweep
has several seeds, so trials running side by side mostly need different stages; the seconds trials
waited for a stage another trial was training (the store's lock) are printed for each run. The
sweep is the default sweep as shipped (3 seeds × 3 budgets × 4 µ, 36 trials of a few seconds;
`--short` shortens the trials as in `stage_reuse.py`, `--set` changes the grid): each sweep pays its
trial workers' start-up (2–3 s here) once, with 1 or 2 trials at a time alike, and on 2 cores the
driver's own work (Tune, MLflow logging) takes CPU from 2 trials but not from 1, so fewer or
shorter trials lower the figure. Run it on a quiet machine: other work on the same cores lowers it
too (the load average is printed).

    python benchmarks/parallel_efficiency.py [--repeats 1] [--short] [--set seed=[0,1] ...]
"""

from __future__ import annotations


from fairsweep.sweep.driver import run_sweep
from fairsweep.tracking import SweepTracking
from sweep_setup import (QUIET, ablation_spec, create_tracking_db, fresh_storage, load_average, start_local_ray,
                         sweep_arguments, with_tracking)
from timing import interleaved_medians


def main() -> None:
    args = sweep_arguments(__doc__, {"short": "shorter trials (fewer epochs)"})
    overrides = ["resources.cpus_per_trial=1", *args.overrides]
    specs = {n: ablation_spec([*overrides, f"sweep.max_concurrent_trials={n}"], args.short) for n in (1, 2)}
    start_local_ray()
    tracking_uri = create_tracking_db()
    waited: dict[int, list[float]] = {1: [], 2: []}

    def sweep(concurrent: int):
        def run(_round: int) -> None:
            spec = with_tracking(specs[concurrent], tracking_uri)
            outcome = run_sweep(spec, fresh_storage("parallel"), SweepTracking.of(spec), console=QUIET)
            assert len(outcome.records) == len(outcome.plan.trials) and not outcome.failed, outcome.failed
            waited[concurrent].append(outcome.lock_wait)
        return run

    times = interleaved_medians({1: sweep(1), 2: sweep(2)}, args.repeats)
    print(f"{len(specs[1].grid_points())} trials ({specs[1].sweep.grid}), 1 CPU per trial, "
          f"median of {args.repeats} after a warm-up round; {load_average()}")
    for concurrent, seconds in times.items():
        lock_waits = ", ".join(f"{w:.1f}" for w in waited[concurrent])
        print(f"  {concurrent} concurrent trial(s)  {seconds:7.1f} s   waited for stage locks (s, per run): {lock_waits}")
    print(f"  parallel efficiency (1 at a time / (2 × 2 at a time))  {times[1] / (2 * times[2]):.2f}")


if __name__ == "__main__":
    main()
