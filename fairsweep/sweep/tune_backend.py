"""Ray Tune as the sweep's scheduler: the trainable (one fairsweep trial per Tune trial), the searcher
that hands out a grid's trials (`PlanSearcher`; a search's is `search.StudySearcher`), the driver's
callback, and the Tuner. Grid and search share this one path: a searcher hands out
`{"trial_id", "values", "data_digest"}`, the trainable rebuilds the trial from the sweep's spec.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ray.tune.search import Searcher

from fairsweep.data import DATA_ENV
from fairsweep.spec import Spec
from fairsweep.sweep.plan import Trial, resolve_spec
from fairsweep.sweep.ray_session import one_line, verbose


LIVE_KEY = "fairsweep_live"  # a report of history rows as the stages make them: JSON [[kind, index, row], ...]
STARTED_KEY = "fairsweep_started"  # ... and when the trial started (Unix time), its run's start
LIVE_SECONDS = 2.0  # a trial reports its new rows at most this often (Tune writes each report to its results)


class LiveRows:
    """A trial's history rows as its stages make them (`run_trial`'s `watch`), reported through Tune to the
    driver, which logs them to MLflow while the trial trains: batched, at most every `every` seconds."""

    def __init__(self, report: Callable[[dict], None], started: float, every: float = LIVE_SECONDS):
        self.report, self.started, self.every = report, started, every
        self.rows: list = []
        self.last = time.monotonic()

    def __call__(self, kind: str, index: int, row: dict) -> None:
        self.rows.append([kind, index, {k: float(v) for k, v in row.items() if isinstance(v, (int, float))}])
        if time.monotonic() - self.last >= self.every:
            self.report({LIVE_KEY: json.dumps(self.rows), STARTED_KEY: self.started})
            self.rows, self.last = [], time.monotonic()


def trial_config(trial: Trial) -> dict:
    """What a searcher hands Tune for `trial`: enough for the worker to rebuild it exactly."""
    return {"trial_id": trial.id, "values": trial.values, "data_digest": trial.data_digest}


TRIALS_PER_TUNER = 500  # a grid's trials go to Tune in runs of at most this many (see `PlanSearcher`)


class PlanSearcher(Searcher):
    """Hands out a grid's trials in the plan's order, at most `per_run` to one Tuner run, then says it is
    finished; `another_run` starts the next. Tune holds every trial of a run in the driver until the run
    ends (its Trial, storage and checkpoint objects, and Ray's references to their results): about 0.1 MB
    a trial. A 10,000-trial sweep in one run peaked at 2.7 GB in the driver, in runs of 500 at 1.5 GB (1.2 GB
    once trials held what they share once: `shared.py`)."""

    def __init__(self, trials: list[Trial], per_run: int | None = None):
        super().__init__()
        self.queue = deque(trials)
        self.per_run, self.handed = per_run or TRIALS_PER_TUNER, 0
        self.halted = False  # set by an interrupt: hand out nothing more

    def halt(self) -> None:
        """Hand out no more trials (from a signal handler: a flag, read by the next `suggest`)."""
        self.halted = True

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self.queue or self.halted or self.handed >= self.per_run:
            return Searcher.FINISHED
        self.handed += 1
        return trial_config(self.queue.popleft())

    def another_run(self) -> bool:
        """Whether trials are left for another Tuner run (none after an interrupt); if so, it may start."""
        self.handed = 0
        return bool(self.queue) and not self.halted

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """The driver's callback logs each trial; nothing to learn from it here."""

    def __reduce__(self):  # Tune pickles its state; the plan stays with the driver
        return (Searcher, ())

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: resuming re-plans from the spec and the trial records."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""


def tune_trial(config: dict, *, storage: str, device: str, threads: int, spec: dict,
               data_env: str | None = None) -> None:
    """The Ray Tune trainable: one trial, its stages through the shared store.

    The trial is the sweep's `spec` with the config's values set (its data defaults resolved as the
    driver resolved them); its data comes decoded from the cache under `storage` and must have the
    content the driver planned with. `data_env` is the driver's $FAIRSWEEP_DATA, for workers started
    without it (a worker's own setting wins)."""
    import ray
    import torch
    from ray import tune

    from fairsweep.sweep.store import StageStore
    from fairsweep.sweep.trial import run_trial

    started = time.time()
    if data_env:
        os.environ.setdefault(DATA_ENV, data_env)
    torch.set_num_threads(threads)
    sweep_spec = Spec.model_validate(spec)
    trial = Trial(resolve_spec(sweep_spec.with_values(config["values"])), config["values"], config["data_digest"])
    assert trial.id == config["trial_id"], "the worker's trial differs from the driver's"
    record = run_trial(trial, StageStore(storage), device, node=ray.get_runtime_context().get_node_id(),
                       watch=LiveRows(tune.report, started), started=started)
    # Tune's last report says only which stages this trial trained: the driver reads the trial's record, and
    # Tune keeps, for every numeric key of a report, running statistics in each trial it holds for the whole
    # sweep (two deques and seven numbers a key), so reporting the metrics made its memory grow with every trial.
    tune.report({f"trained_{k}": int(v) for k, v in record.trained.items()})


def driver_callback(on_start: Callable[[str], None], on_complete: Callable[[str], None],
                    on_error: Callable[[str, str], None], on_rows: Callable[[str, float, list], None]):
    """A Tune callback in the driver, told each trial's fairsweep id as it starts, reports history rows (with
    its start time and the rows, `LiveRows`), completes or fails (with the error's last line, from the text
    file Tune writes: never its pickle)."""
    from ray import tune

    class DriverCallback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            on_start(trial.config["trial_id"])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if LIVE_KEY in result:
                on_rows(trial.config["trial_id"], float(result[STARTED_KEY]), json.loads(result[LIVE_KEY]))

        def on_trial_complete(self, iteration, trials, trial, **info):
            on_complete(trial.config["trial_id"])

        def on_trial_error(self, iteration, trials, trial, **info):
            try:
                text = (trial.get_error() or "").strip().splitlines()
            except OSError:  # unreadable (a full disk leaves it empty or missing)
                text = []
            on_error(trial.config["trial_id"], text[-1] if text else "the trial failed (Tune kept no error text)")

        def __reduce__(self):  # Tune pickles its run config; the driver-side state stays behind
            return (tune.Callback, ())

    return DriverCallback()


class Interrupt:
    """SIGINT (Ctrl-C) or SIGTERM during a sweep. The first stops it: Tune hands out no more trials and
    stops the running ones (their stages resume from their last epoch checkpoint next time); the
    second raises KeyboardInterrupt at once. `signum` is the first signal's number, None if none came.
    Tune's own SIGINT handler is off meanwhile: it would stop the sweep without saying so."""

    def __init__(self, on_first: Callable[[int], None] | None = None):
        self.signum: int | None = None
        self.on_first = on_first
        self._previous: dict[int, object] = {}
        self._tune_handler: str | None = None  # TUNE_DISABLE_SIGINT_HANDLER as it was

    def __enter__(self) -> Interrupt:
        self._tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._tune_handler

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.on_first is not None:
            self.on_first(signum)

    def stopper(self):
        """A Tune stopper that ends the experiment once a signal has come."""
        from ray.tune.stopper import NoopStopper, Stopper

        interrupt = self

        class InterruptStopper(Stopper):
            def __call__(self, trial_id, result) -> bool:
                return False

            def stop_all(self) -> bool:
                return interrupt.signum is not None

            def __reduce__(self):  # Tune pickles its run config; the driver's state stays behind
                return (NoopStopper, ())

        return InterruptStopper()


_RUNS = itertools.count()  # Tuner runs of this process: each its own experiment directory


def run_tune(spec: Spec, storage: Path, searcher: Searcher, callback, interrupt: Interrupt | None = None
             ) -> dict[str, str]:
    """Run the trials `searcher` hands out on the connected Ray, until it is finished or `interrupt` has
    come. Returns the errors of the trials that failed, by fairsweep trial id (a trial stopped by the
    interrupt has not failed)."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    res = spec.resources
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, storage=str(storage), device=res.device,
                             threads=max(1, int(res.cpus_per_trial)), spec=spec.model_dump(mode="json"),
                             data_env=os.environ.get(DATA_ENV)),
        {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True,
                                    max_concurrent_trials=spec.sweep.max_concurrent_trials),
        run_config=tune.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{next(_RUNS)}",  # runs may start in one second
            storage_path=str(storage / "tune"),
            failure_config=tune.FailureConfig(max_failures=res.max_failures),
            callbacks=[callback, JsonLoggerCallback()],
            stop=interrupt.stopper() if interrupt is not None else None,
            verbose=1 if verbose() else 0,
        ),
    )
    # Tune logs each trial's error with its traceback, each failed write to its state, and at an interrupt
    # each stopped trial's missing result files: the driver says what failed, in a line per trial
    quiet = [logging.getLogger(name) for name in ("ray.tune", "ray.train")]
    levels = [logger.level for logger in quiet]
    if not verbose():
        for logger in quiet:
            logger.setLevel(logging.CRITICAL)
    failures = {}
    try:
        # Tune's result grid unpickles the error files (error.pkl) of the trials that failed: only those
        # this very call wrote, in its own new experiment directory (see `name` above)
        for result in tuner.fit():
            if result.error is not None:
                # a trial that failed before its trainable started has no config in its result
                trial_id = (result.config or {}).get("trial_id")
                failures[trial_id or f"<trial {len(failures)}>"] = one_line(result.error)
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    return failures
