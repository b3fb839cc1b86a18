"""Run a whole sweep: pre-flight, the trials Ray Tune schedules, every finished trial logged to MLflow.

Resuming is re-running: a trial whose MLflow run is finished is skipped, one whose record exists
(its worker finished but the driver died before logging) is only logged, and the rest go to Tune,
where each runs only the stages missing from the store. A grid's trials reach Tune through a
searcher that hands out the plan (`PlanSearcher`), a search's through the Optuna study's
(`StudySearcher`): one path for both.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fairsweep.data import cache as data_cache
from fairsweep.files import sqlite_checkpoint, write_atomic
from fairsweep.metrics.mitigation import mitigation_metrics
from fairsweep.spec import Spec
from fairsweep.sweep.gc import sweep_running, write_manifest
from fairsweep.sweep.pareto import front_trials
from fairsweep.sweep.plan import STAGE_KINDS, Plan, Trial, probe_points
from fairsweep.sweep.preflight import preflight
from fairsweep.sweep.progress import Progress
from fairsweep.sweep.ray_session import RaySession, one_line
from fairsweep.sweep.records import TrialRecord, read_trial_record, trial_record_path, update_trial_metrics
from fairsweep.sweep.results import records_frame, results_table
from fairsweep.sweep.shared import Shared


LOW_DISK_BYTES = 64 * 2**20  # below this free on the storage's disk, a stop names the space left


@dataclass
class SweepOutcome:
    plan: Plan
    records: dict[str, TrialRecord]  # trial id -> record, for every finished trial of the plan
    failed: dict[str, str] = field(default_factory=dict)  # trial id -> error
    trained: dict[str, int] = field(default_factory=dict)  # stages trained by this invocation, by kind
    lock_wait: float = 0.0  # seconds this invocation's trials waited for stages other trials were training
    skipped: int = 0  # trials already finished before this invocation
    parent_run_id: str = ""
    seconds: float = 0.0
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the sweep before its end
    names: dict[str, str] = field(default_factory=dict)  # trial id -> name, of every trial the sweep met
    table_path: Path | None = None  # the results table as CSV, every row
    stopped: str | None = None  # why the sweep ended before its end other than by a signal (a full disk, say)

    def failed_names(self) -> dict[str, str]:
        """The failures by trial name, for people."""
        return {self.names.get(trial_id, trial_id): error for trial_id, error in self.failed.items()}


class Tracking(Protocol):
    """Where a sweep's results are recorded (MLflow: `fairsweep.tracking.SweepTracking`), handed to
    `run_sweep` by its caller, so that the sweep layer does not import the tracking layer above it."""

    def open_sweep(self, spec: Spec, num_trials: int) -> tuple[str, dict[str, str]]:
        """The sweep's run (a previous run of the same spec's, or a new one), and the trial runs it holds
        finished: (run id, trial id -> run id). Called on a thread of its own while Ray starts."""

    def log_trial(self, parent_id: str, trial: Trial, record: TrialRecord, storage: Path) -> str:
        """Log a finished trial (its stages' curves and final model from the store) as a run of the sweep's."""

    def include_trial(self, parent_id: str, run_id: str) -> None:
        """Make a trial run another sweep logged one of this sweep's too (it is not logged again)."""

    def log_live(self, parent_id: str, trial: Trial, started: float, rows: list) -> None:
        """History rows `[kind, index, row]` of a trial that is training, which started at `started`."""

    def end_live(self, status: str) -> None:
        """The runs of trials that reported rows but did not finish end with `status` (FAILED, KILLED)."""

    def log_missing_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Add metrics known only once other trials finished, leaving out those the run has."""

    def log_models(self, run_ids: list[str], storage: Path) -> None:
        """The final models of these trial runs (the front's: `tracking.log_models: front`), those not logged yet."""

    def finish_sweep(self, run_id: str, table_csv: str, summary: dict[str, float], status: str) -> None:
        """The results table and the sweep's summary numbers; the run ends with `status` (FINISHED,
        FAILED, or KILLED for an interrupted sweep)."""


class SweepDriver:
    """What the sweep has done, by trial id: the trials it met, the records of finished ones, failures, the
    MLflow run of each logged trial, the stages trained and the waits. Tune's callback, the logging thread
    and the search's searcher all report here; every change happens under one lock."""

    def __init__(self, spec: Spec, plan: Plan, storage: Path, tracking: Tracking, parent_run_id: str,
                 logged: dict[str, str]):
        self.spec, self.storage, self.tracking = spec, storage, tracking
        self.outcome = SweepOutcome(plan, records={}, trained={k: 0 for k in STAGE_KINDS},
                                    parent_run_id=parent_run_id)
        self.trials: dict[str, Trial] = {}
        self.logged = logged  # trial id -> MLflow run id, of the trials this sweep's run holds
        self.logged_now: set[str] = set()  # the trials logged by this invocation
        self.progress = None
        self.last_errors: dict[str, str] = {}  # trial id -> its last failed attempt's error, as Tune's callback said
        self._shared = Shared()  # the records' equal parts, held once
        self._lock = threading.Lock()
        for trial in plan.trials:
            self._add(trial)

    def _add(self, trial: Trial) -> None:
        self.trials[trial.id] = trial
        self.outcome.names[trial.id] = trial.name

    def register(self, trial: Trial) -> None:
        """A search trial joins the plan (the grid's are in it from the start)."""
        with self._lock:
            if trial.id not in self.trials:
                self._add(trial)
                self.outcome.plan.trials.append(trial)

    def reuse(self, trial: Trial) -> TrialRecord | None:
        """The record of a trial finished earlier (logged now if its driver died before logging it), or
        None if the trial is to run."""
        with self._lock:
            record = self._finish(trial.id)
            if record is None:
                return None
            self.outcome.skipped += 1
        if self.progress is not None:
            self.progress.trial_skipped()
        return record

    def started(self, trial_id: str) -> None:
        self.progress.trial_started()

    def completed(self, trial_id: str) -> None:
        """A trial Tune ran has finished: log it, count its stages (on the logging thread)."""
        with self._lock:
            if trial_id in self.outcome.records:  # reported twice (a retry): counted once
                return
            record = self._finish(trial_id)
            if record is None:
                return
            attempt = record.last_attempt()  # this sweep's run (another driver's measured it, if it came first)
            for kind, trained in attempt.trained.items():
                self.outcome.trained[kind] += int(trained)
            self.outcome.lock_wait += sum(attempt.lock_wait_s.values())
        self.progress.trial_done(record.name, record.metrics, attempt.trained)

    def progressed(self, trial_id: str, started: float, rows: list) -> None:
        """A training trial's new history rows (on the logging thread): its live curves. Never a failure: the
        trial's curves are logged whole when it finishes."""
        trial = self.trials.get(trial_id)
        if trial is None or trial_id in self.outcome.records:
            return
        try:
            self.tracking.log_live(self.outcome.parent_run_id, trial, started, rows)
        except Exception:  # MLflow gave out: the trial's own logging, when it finishes, says so
            pass

    def errored(self, trial_id: str, error: str) -> None:
        """A trial's attempt failed (Tune may retry it): its error is kept in case Tune cannot say it later."""
        with self._lock:
            self.last_errors[trial_id] = error
        self.progress.trial_failed(self.outcome.names.get(trial_id, trial_id))

    def fail_unfinished(self) -> None:
        """Tune stopped without its results: each trial whose attempt failed and that has not finished failed."""
        with self._lock:
            for trial_id, error in self.last_errors.items():
                if trial_id not in self.outcome.records:
                    self.outcome.failed.setdefault(trial_id, error)

    def fail(self, trial_id: str, error: str) -> None:
        with self._lock:
            self.outcome.failed[trial_id] = error

    def _finish(self, trial_id: str) -> TrialRecord | None:
        """Under the lock: the finished trial's record, logged to MLflow if it is not yet; None if the trial
        has not finished (or could not be logged, which is then a failure that re-running mends)."""
        if trial_id in self.outcome.records:
            return self.outcome.records[trial_id]
        record = read_trial_record(self.storage, trial_id)
        if record is None:
            return None
        # The record may come from another sweep sharing the storage: name it as this sweep does.
        trial = self.trials[trial_id]
        record = self._shared.record(record, name=trial.name, values=trial.values,
                                     spec=trial.spec.model_dump(mode="json"))
        try:
            if trial_id in self.logged:  # by this sweep, or another of the experiment: this sweep's too
                self.tracking.include_trial(self.outcome.parent_run_id, self.logged[trial_id])
            else:
                self.logged[trial_id] = self.tracking.log_trial(self.outcome.parent_run_id, trial, record, self.storage)
                self.logged_now.add(trial_id)
        except Exception as exc:  # the trial's results are safe in the store; re-running logs them
            self.outcome.failed[trial_id] = (f"logging to MLflow failed ({one_line(exc)}); its results are kept "
                                             "in the storage and re-running the command logs them")
            return None
        self.outcome.records[trial_id] = record
        return record

    def add_mitigation_effects(self) -> None:
        """Figure 9's metrics, once the sweep's trials are done: for every finished trial whose finetuning is
        not plain KD (µ > 0, or the released code's), against its plain-KD twin (the same trial with µ = 0
        under Algorithm 1, from this sweep or any other sharing the storage)."""
        outcome = self.outcome
        for trial in outcome.plan.trials:
            record = outcome.records.get(trial.id)
            twin = plain_kd_twin(trial)
            if record is None or twin is None:
                continue
            twin_record = outcome.records.get(twin.id) or read_trial_record(self.storage, twin.id)
            if twin_record is None:
                continue
            metrics = mitigation_metrics(twin_record.accuracy["final"], record.accuracy["final"])
            changed = {k: v for k, v in metrics.items() if repr(record.metrics.get(k)) != repr(v)}
            if changed:
                record.metrics.update(changed)
                update_trial_metrics(self.storage, trial.id, changed)
            # a run logged by an earlier invocation holds what its record held then: only a change is missing
            if trial.id in self.logged and (changed or trial.id in self.logged_now):
                self.tracking.log_missing_metrics(self.logged[trial.id], metrics)


def plain_kd_twin(trial: Trial) -> Trial | None:
    """The same trial finetuned with plain KD (µ = 0 under Algorithm 1), or None if it is plain KD itself."""
    finetune = trial.spec.finetune
    if finetune.mu == 0 and finetune.mitigation == "algorithm1":
        return None
    plain = finetune.model_copy(update={"mu": 0.0, "mitigation": "algorithm1"})
    return Trial(trial.spec.model_copy(update={"finetune": plain}), {}, trial.data_digest)


def run_sweep(spec: Spec, storage: Path, tracking: Tracking, address: str | None = None, console=None
              ) -> SweepOutcome:
    """Run `spec`'s trials on Ray (local, or the cluster at `address`), their stages in `storage`, each
    finished trial logged by `tracking`. SIGINT or SIGTERM once stops the sweep (what finished is kept
    and logged; `outcome.interrupted` says which signal); twice, at once (KeyboardInterrupt)."""
    started = time.time()
    storage = Path(storage).expanduser().resolve()
    with RaySession(address or spec.resources.address) as ray:
        if ray.address:  # fail fast on an unreachable cluster, before any work
            ray.connect()
        resources, where = ray.resources()
        if spec.sweep.search is None:
            checked = preflight(spec, storage, resources, where)
            plan = checked.plan
        else:  # trials come from the study as it runs; its probe values are checked now
            checked = preflight(spec, storage, resources, where, points=probe_points(spec))
            plan = Plan(spec, [])
        if console is not None:
            console.print("\n".join(checked.lines()), highlight=False, soft_wrap=True)
        with sweep_running(storage):  # once pre-flight has found the storage usable
            write_manifest(storage, spec.content_hash(), spec.name, plan, data_cache.TOUCHED)
            return _run(spec, plan, storage, tracking, console, started, ray, checked.digests)


def _run(spec: Spec, plan: Plan, storage: Path, tracking: Tracking, console, started: float, ray: RaySession,
         digests) -> SweepOutcome:
    # Ray Tune's import takes seconds: only a sweep with trials to run needs it
    from fairsweep.sweep.tune_backend import Interrupt, PlanSearcher, driver_callback, run_tune

    search = spec.sweep.search
    num_trials = len(plan.trials) if search is None else search.n_trials * search.seeds_per_trial
    # A grid with trials to run starts its local Ray while MLflow opens on a thread (Ray wants the main
    # thread; MLflow's imports and store, its tables on a first run, take seconds too). A trial with a
    # record has finished: looking for the file is enough. A search learns whether it has work from its
    # study; its Ray starts when Tune needs it.
    start_early = search is None and not all(trial_record_path(storage, t.id).is_file() for t in plan.trials)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairsweep-mlflow") as opening:
        opened = opening.submit(tracking.open_sweep, spec, num_trials)
        if start_early:
            ray.connect()
        parent, logged = opened.result()
    driver = SweepDriver(spec, plan, storage, tracking, parent, logged)
    if search is None:
        pending = [t for t in plan.trials if driver.reuse(t) is None and t.id not in driver.outcome.failed]
        driver.progress = Progress(len(plan.trials), already_done=driver.outcome.skipped, console=console)
        searcher = PlanSearcher(pending) if pending else None
    else:
        from fairsweep.sweep.search import StudySearcher, open_study, study_database  # imports Ray Tune

        study = StudySearcher(open_study(spec, storage), spec, digests, driver.register, driver.reuse,
                              lambda trial_id: read_trial_record(storage, trial_id))
        study.adopt_finished()
        driver.progress = Progress(study.total_trials, already_done=driver.outcome.skipped, console=console,
                                   objectives=search.objectives)
        searcher = study if study.has_work else None

    def on_first_signal(signum: int) -> None:
        driver.progress.interrupted(signum)
        if searcher is not None:  # Tune asks it again as soon as a trial ends, before it sees the stopper
            searcher.halt()

    interrupt = Interrupt(on_first=on_first_signal)
    outcome = driver.outcome
    if searcher is not None:
        ray.connect()
        try:
            _schedule(driver, searcher, interrupt, run_tune, driver_callback)
        except KeyboardInterrupt:  # the second signal: stop at once, the sweep's run says so
            driver.progress.close()
            tracking.finish_sweep(parent, "", {}, status="KILLED")
            raise
        except Exception as exc:  # Tune, the storage or MLflow gave out: what finished is kept and said
            driver.fail_unfinished()
            outcome.stopped = stop_cause(exc, storage)
    driver.progress.close()
    if search is not None:  # optuna.db whole on its own, for a copy of it
        sqlite_checkpoint(study_database(storage))
    try:
        driver.add_mitigation_effects()
    except Exception as exc:
        outcome.stopped = outcome.stopped or stop_cause(exc, storage)
    if outcome.failed and outcome.stopped is None and (low := low_disk(storage)):
        outcome.stopped = f"trials failed with {low}"  # their errors rarely say so (torch: "unexpected pos")
    if search is not None:  # the study's trials, known now
        try:
            write_manifest(storage, spec.content_hash(), spec.name, outcome.plan, data_cache.TOUCHED)
        except OSError as exc:  # a full disk: the last manifest stands; gc keeps what the records name
            outcome.stopped = outcome.stopped or stop_cause(exc, storage)
    outcome.seconds = time.time() - started
    outcome.interrupted = interrupt.signum
    table = results_table(records_frame(outcome.records.values(), spec.sweep.varied_keys), spec.sweep.varied_keys)
    if table is not None:  # the whole table, however long the printed one: beside the trial records
        path = storage / "results" / f"{spec.name}-{spec.content_hash()[:12]}.csv"
        try:
            write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
            outcome.table_path = path
        except OSError as exc:  # a full disk, say: the table is still printed and logged to MLflow
            outcome.stopped = outcome.stopped or stop_cause(exc, storage)
    summary = {"trials_finished": len(outcome.records), "trials_failed": len(outcome.failed),
               "wall_seconds": outcome.seconds, "lock_wait_seconds": outcome.lock_wait}
    summary.update({f"stages_trained/{k}": v for k, v in outcome.trained.items()})
    status = ("KILLED" if outcome.interrupted is not None else "FAILED" if outcome.failed or outcome.stopped
              else "FINISHED")
    if status == "FINISHED" and spec.tracking.log_models == "front":  # the front of the whole sweep, not a part
        try:
            front = front_trials(spec, outcome.records.values())
            tracking.log_models([driver.logged[trial_id] for trial_id in front if trial_id in driver.logged], storage)
        except Exception as exc:  # the models are in the stage store; re-running logs them
            outcome.stopped = f"logging the Pareto front's models to MLflow failed: {stop_cause(exc, storage)}"
            status = "FAILED"
    try:
        tracking.finish_sweep(parent, table.to_csv(index=False) if table is not None else "", summary, status)
    except Exception as exc:  # the trials' records are in the storage; a re-run logs what is missing
        closing = f"the sweep's MLflow run could not be marked {status}: {stop_cause(exc, storage)}"
        outcome.stopped = f"{outcome.stopped}; {closing}" if outcome.stopped else closing
    return outcome


def _schedule(driver: SweepDriver, searcher, interrupt, run_tune, driver_callback) -> None:
    """The trials through Ray Tune, each finished one logged on a thread of its own (Tune waits for its
    callbacks before it starts the next trial); then whatever Tune reported failed, and any completion
    its callback missed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairsweep-logging") as logging_thread, interrupt:
        logged_futures = deque()  # the loggings of finished trials not yet done, and any that failed

        def log_completed(trial_id: str) -> None:
            for _ in range(len(logged_futures)):  # done ones dropped: a future per trial, kept, grows with N
                future = logged_futures.popleft()
                if not future.done() or future.exception() is not None:
                    logged_futures.append(future)
            logged_futures.append(logging_thread.submit(driver.completed, trial_id))

        callback = driver_callback(driver.started, log_completed, driver.errored,
                                   lambda *rows: logging_thread.submit(driver.progressed, *rows))
        failures = run_tune(driver.spec, driver.storage, searcher, callback, interrupt)
        while searcher.another_run():  # a grid's next part (`PlanSearcher`); a search has one
            failures.update(run_tune(driver.spec, driver.storage, searcher, callback, interrupt))
    for future in logged_futures:  # every finished trial is logged by now; an error in logging one is raised here
        future.result()
    for trial_id, error in failures.items():
        driver.fail(trial_id, error)
    for trial in list(driver.outcome.plan.trials):  # a completion the callback missed is still logged
        if trial.id not in driver.outcome.records and trial.id not in driver.outcome.failed:
            driver.completed(trial.id)
    driver.tracking.end_live("KILLED" if interrupt.signum is not None else "FAILED")  # what trained, unfinished


def stop_cause(exc: BaseException, storage: Path) -> str:
    """Why the sweep stopped, in one line: the error, with the free space of the storage's disk where
    that is what ran out (Ray Tune then reads back an empty error file and says only `EOFError`)."""
    cause = f"{type(exc).__name__}: {one_line(exc)}"
    if isinstance(exc, EOFError):
        cause = f"Ray Tune could not read back a trial's error file under {storage / 'tune'} ({cause})"
    low = low_disk(storage)
    return f"{cause}; {low}" if low else cause


def low_disk(storage: Path) -> str | None:
    """What to say if the storage's disk is (nearly) full; None if it is not."""
    free = shutil.disk_usage(storage).free if storage.exists() else None
    if free is None or free >= LOW_DISK_BYTES:
        return None
    return f"the storage's disk has {free / 2**20:.1f} MiB free (no space left?)"
