"""What each `tracking.log_models` choice costs a sweep: the driver's time logging its trials to MLflow, and
the bytes MLflow stores, with every model (`all`), the Pareto front's (`front`) or none (`none`).

The digits µ-ablation (`sweeps/digits_mu_ablation.yaml`, shortened as in `stage_reuse.py`; `--set` changes
it) is trained once, untimed, logging no model. Then, per choice, the same sweep runs again on that storage
into an experiment of its own: every trial has its record, so the sweep trains nothing and only logs
(params, metrics, curves, the datasets and the models the choice asks for; the front's at its end).
Prints the median seconds of each (interleaved repeats, after a warm-up round), their ratios to `none`
measured in this run, the models logged and the bytes of their artifacts.

    python benchmarks/model_logging.py [--repeats 1] [--set seed=[0,1,2] ...]
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from fairsweep.sweep.driver import run_sweep
from fairsweep.sweep.footprint import human_bytes
from fairsweep.tracking import SweepTracking, Tracker
from sweep_setup import (QUIET, ablation_spec, create_tracking_db, fresh_storage, load_average, start_local_ray,
                         sweep_arguments, with_tracking)
from timing import interleaved_medians

CHOICES = ("none", "front", "all")


def artifact_bytes(tracker: Tracker) -> tuple[int, int]:
    """The logged models of the tracker's experiment: how many, and the bytes of their artifacts."""
    models = tracker.client.search_logged_models([tracker.experiment_id], max_results=10_000)
    size = sum(f.stat().st_size for m in models for f in Path(urlparse(m.artifact_location).path).rglob("*")
               if f.is_file())
    return len(models), size


def main() -> None:
    args = sweep_arguments(__doc__)
    spec = ablation_spec(args.overrides)
    storage, uri = fresh_storage("runs"), create_tracking_db()
    start_local_ray()
    trained = with_tracking(spec.model_copy(update={"tracking": spec.tracking.model_copy(
        update={"log_models": "none"})}), uri)
    outcome = run_sweep(trained, storage, SweepTracking.of(trained), console=QUIET)
    print(f"{spec.name}: {len(outcome.records)} trials trained once ({outcome.seconds:.1f} s), {load_average()}")
    experiments: dict[str, list[Tracker]] = {choice: [] for choice in CHOICES}

    def log_with(choice: str):
        def run(_round: int) -> None:
            tracking = spec.tracking.model_copy(update={"log_models": choice})
            logged = with_tracking(spec.model_copy(update={"tracking": tracking}), uri)
            done = run_sweep(logged, storage, SweepTracking.of(logged), console=QUIET)
            assert done.skipped == len(done.records) == len(outcome.records), "a trial ran again"
            experiments[choice].append(Tracker(uri, logged.experiment))
        return run

    seconds = interleaved_medians({choice: log_with(choice) for choice in CHOICES}, args.repeats)
    print(f"logging {len(outcome.records)} finished trials to a new experiment, median of {args.repeats} "
          f"(after a warm-up round), {load_average()}:")
    for choice in CHOICES:
        count, size = artifact_bytes(experiments[choice][-1])
        print(f"  log_models: {choice:5}  {seconds[choice]:6.1f} s  ({seconds[choice] / seconds['none']:.2f}× none)  "
              f"{count:3d} models, {human_bytes(size)} of model artifacts")


if __name__ == "__main__":
    main()
