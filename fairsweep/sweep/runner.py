"""Run a whole sweep: check the plan, schedule the missing trials with Ray Tune, track them in MLflow.

Resuming is re-running: a trial whose MLflow run is finished is skipped, one whose record exists
(its worker finished but the driver died before logging) is only logged, and the rest go to Tune,
where each runs only the stages missing from the store.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairsweep import errors
from fairsweep.data import DATA_ENV
from fairsweep.errors import UserError
from fairsweep.spec import Spec
from fairsweep.sweep.plan import STAGE_KINDS, Plan, Trial, make_plan

# the results table's metrics; mitigation_drop_pct only where the sweep has µ > 0 and µ = 0 twins
TABLE_METRICS = ("acc", "worst_group_acc", "drop_gap_pct", "mitigation_drop_pct")


@dataclass
class SweepOutcome:
    plan: Plan
    records: dict[str, dict]  # trial id -> record, for every finished trial of the plan
    failed: dict[str, str] = field(default_factory=dict)  # trial name -> error
    trained: dict[str, int] = field(default_factory=dict)  # stages trained by this invocation, by kind
    lock_wait: float = 0.0  # seconds this invocation's trials waited for stages other trials were training
    skipped: int = 0  # trials already finished before this invocation
    parent_run_id: str = ""
    seconds: float = 0.0


def local_resources() -> dict[str, float]:
    """What a local Ray started by fairsweep offers."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


@dataclass(frozen=True)
class DataSummary:
    """What the driver saw of one data configuration of the plan (split with its first trial's seed)."""

    dataset: str
    seed: int
    group_sizes: dict[str, dict[str, int]]  # split -> group -> samples
    notes: tuple[str, ...]

    def lines(self) -> list[str]:
        """One line per group: its samples in train / val / test."""
        sizes = self.group_sizes
        head = f"data {self.dataset} (seed {self.seed}), samples per group in train / val / test:"
        return [head, *(f"  {g}: {sizes['train'][g]} / {sizes['val'][g]} / {sizes['test'][g]}" for g in sizes["train"]),
                *self.notes]


def check_plan(plan: Plan, resources: dict[str, float] | None, where: str = "this machine",
               storage: Path | None = None) -> list[DataSummary]:
    """Everything that can be known wrong before training: data, budgets vs ReLU counts, and (unless
    `resources` is None) whether Ray can ever schedule a trial with what it offers.

    Each data configuration is loaded here, in the driver, so a dataset's files are found, read and
    decoded into the cache under `storage` (if given) once, before any trial needs them (kept even
    if the plan has problems: decoding is the expensive part). Once the plan has none, each
    configuration is split with every seed of the plan, checked, and cached there too, so that the
    trials' workers never compute a split. Returns what was seen of each data configuration (split
    with its first seed)."""
    from fairsweep.data import dataset_info, load_splits
    from fairsweep.data.cache import DataCache
    from fairsweep.sweep.store import StageStore

    problems: list[str] = []
    res = plan.spec.resources
    if resources is not None:
        if res.gpus_per_trial > resources.get("GPU", 0):
            problems.append(errors.RESOURCES_UNAVAILABLE.format(
                key="gpus_per_trial", need=res.gpus_per_trial, where=where, have=int(resources.get("GPU", 0)),
                unit="GPUs", hint="Use `--set resources.device=cpu --set resources.gpus_per_trial=0`."))
        if res.cpus_per_trial > resources.get("CPU", 0):
            problems.append(errors.RESOURCES_UNAVAILABLE.format(
                key="cpus_per_trial", need=res.cpus_per_trial, where=where, have=int(resources.get("CPU", 0)),
                unit="CPUs", hint="Lower resources.cpus_per_trial."))
    cache = DataCache(StageStore(storage).data_cache) if storage is not None else None
    summaries: dict[str, DataSummary | None] = {}
    inputs: dict[str, tuple[tuple[int, ...], int]] = {}  # data key -> (input shape, classes)
    counts: dict[str, Any] = {}  # model_problems' memo across trials
    seeds: dict[tuple[str, int], Spec] = {}  # (data key, seed) -> a spec with them
    for trial in plan.trials:
        spec = trial.spec
        data_key = json.dumps(spec.data.model_dump(mode="json"), sort_keys=True)
        seeds.setdefault((data_key, spec.seed), spec)
        if data_key not in summaries:
            try:
                splits = load_splits(spec.data, spec.seed, None if dataset_info(spec.data.dataset).embedded else cache)
            except UserError as exc:
                problems.extend(exc.problems)
                summaries[data_key] = None
                continue
            summaries[data_key] = DataSummary(spec.data.dataset, spec.seed, splits.group_sizes(), splits.notes)
            inputs[data_key] = (tuple(splits.train.x.shape[1:]), len(splits.train.class_names))
        if summaries[data_key] is None:
            continue
        varied = "sweep.search.space" if plan.spec.sweep.search is not None else "sweep.grid"
        key = f"{varied}.linearize.budget" if "linearize.budget" in trial.values else "linearize.budget"
        problems.extend(model_problems(spec, *inputs[data_key], key, counts))
    if not problems and cache is not None:
        for spec in seeds.values():
            try:
                load_splits(spec.data, spec.seed, cache)
            except UserError as exc:  # e.g. a group too small in this seed's split
                problems.extend(exc.problems)
    if problems:
        raise UserError(list(dict.fromkeys(problems)))
    return [summary for summary in summaries.values() if summary is not None]


def model_problems(spec: Spec, input_shape: tuple[int, ...], num_classes: int, budget_key: str,
                   cache: dict[str, Any]) -> list[str]:
    """The architecture must take the model section's options (stem_relu) and the data's inputs, and the
    budget must be within the model's ReLUs (for DeepReDuce, within its configurations' range). `cache`
    keeps counts across trials."""
    import torch

    from fairsweep.linearize import count_relus, resolve_budget
    from fairsweep.linearize.deepreduce import enumerate_configurations
    from fairsweep.models import input_problem, stem_relu_problem
    from fairsweep.sweep.trial import build_model

    arch, width, shape = spec.model.arch, spec.model.width, "×".join(map(str, input_shape))
    options = spec.model.factory_kwargs()
    problem = None if spec.model.stem_relu is None else stem_relu_problem(arch, "model.stem_relu",
                                                                          str(spec.model.stem_relu).lower())
    if problem is not None:
        return [problem]
    model_key = json.dumps([arch, options, input_shape])
    if model_key not in cache:
        problem = input_problem(arch, input_shape, **options)
        if problem is None:
            with torch.device("meta"):  # shapes only: counting needs no compute
                model = build_model(spec, num_classes, input_shape)
            cache[model_key] = count_relus(model, input_shape).total
        else:
            cache[model_key] = errors.INPUT_NOT_ACCEPTED.format(arch=arch, dataset=spec.data.dataset, shape=shape,
                                                                reason=problem)
    if isinstance(cache[model_key], str):
        return [cache[model_key]]
    total = cache[model_key]
    lin = spec.linearize
    budget = resolve_budget(lin.budget, total)
    if budget > total:
        return [errors.BUDGET_RANGE.format(key=budget_key, total=total, value=lin.budget)]
    if lin.method != "deepreduce":
        return []
    dr = lin.deepreduce
    dr_key = json.dumps([model_key, dr.width_factors, dr.resolution_factors])
    if dr_key not in cache:
        counts = [c.relu_count for c in enumerate_configurations(arch, input_shape, width, dr.width_factors,
                                                                 dr.resolution_factors, options)]
        cache[dr_key] = (min(counts), max(counts)) if counts else None
    if cache[dr_key] is None:
        return [errors.DR_NO_CONFIGURATION.format(arch=arch, shape=shape)]
    low, high = cache[dr_key]
    if budget < low:
        return [errors.DR_BUDGET_BELOW.format(key=budget_key, arch=arch, shape=shape, low=low, high=high,
                                              value=lin.budget, budget=budget)]
    return []


def describe_plan(plan: Plan, storage: Path | None = None) -> dict[str, Any]:
    """Trials, unique stages per kind, and how many of those are already stored."""
    from fairsweep.sweep.store import StageStore

    store = StageStore(storage) if storage is not None else None
    out: dict[str, Any] = {"trials": len(plan.trials), "stages": {}}
    for kind in STAGE_KINDS:
        unique = plan.unique_stages(kind)
        stored = sum(store.has(s) for s in unique.values()) if store else 0
        out["stages"][kind] = {"unique": len(unique), "stored": stored}
    return out


def run_sweep(spec: Spec, storage: Path, address: str | None = None, console=None) -> SweepOutcome:
    started = time.time()
    storage = Path(storage).expanduser().resolve()
    plan = make_plan(spec)
    checked = plan
    if spec.sweep.search is not None:  # trials come from the study as it runs; check its probe values now
        from fairsweep.sweep.search import probe_plan

        plan, checked = Plan(spec, []), probe_plan(spec)
    address = address or spec.resources.address
    if address:  # fail fast on an unreachable cluster, before any work
        _connect_ray(address)
    start_local_ray = False
    try:
        if address:
            data = check_plan(checked, largest_node(), where=f"the largest node of the Ray cluster at {address}",
                              storage=storage)
        else:
            from fairsweep.sweep.trial import trial_record_path

            data = check_plan(checked, local_resources(), storage=storage)
            # A grid with trials to run starts its local Ray in _run, while MLflow opens on a thread (a search
            # learns whether it has work from its study; its Ray starts when Tune needs it). A trial with a
            # record has finished: looking for the file is enough (_run reads the records).
            start_local_ray = (spec.sweep.search is None and not _ray_initialized()
                               and not all(trial_record_path(storage, trial.id).is_file() for trial in plan.trials))
        if console is not None:
            for summary in data:
                console.print("\n".join(summary.lines()), highlight=False, soft_wrap=True)
        return _run(spec, plan, storage, console, started, start_local_ray)
    finally:
        if address or start_local_ray:
            import ray

            ray.shutdown()


def _ray_initialized() -> bool:
    _ray_environment()
    import ray

    return ray.is_initialized()


def largest_node() -> dict[str, float]:
    """The most CPUs and the most GPUs any one alive node of the connected Ray cluster has: a trial runs on
    one node, so the cluster's totals could promise what no node can give."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    return {key: max((n.get(key, 0.0) for n in nodes), default=0.0) for key in ("CPU", "GPU")}


def _ray_environment() -> None:
    """Set before Ray is imported."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune then prints nothing itself
    # Tune's default per-trial loggers off (its TensorBoard writer costs the driver a thread's CPU while
    # the trials train); the trial records and MLflow hold the results. _run_with_tune adds back the
    # JSON one, from which Tune's result grid reads each trial's last result.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


def _connect_ray(address: str | None) -> None:
    """Connect to the cluster at `address`, or start a local Ray bound to 127.0.0.1."""
    _ray_environment()
    if address:
        _check_reachable(address)
        if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").is_file():
            # `ray start` clusters use token auth with this file by default; Ray 2.60 picks the token up
            # for `--address auto` but not for an explicit HOST:PORT unless the mode is set before Ray
            # is imported (seen here).
            os.environ["RAY_AUTH_MODE"] = "token"
    import logging

    import ray

    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:  # ConnectionError, or Ray's own when no cluster answers
            raise UserError(errors.NO_RAY_CLUSTER.format(address=address, reason=_one_line(exc))) from None
    else:
        # "local": a Ray of our own; without it, ray.init() joins the cluster that `ray start` last started
        # on this machine (found in /tmp/ray/ray_current_cluster), e.g. someone else's
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, _node_ip_address="127.0.0.1")


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers is an error now: `ray.init` would retry it without end."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(errors.NO_RAY_CLUSTER.format(address=address, reason=exc.strerror or exc)) from None


def _run(spec: Spec, plan: Plan, storage: Path, console, started: float, start_local_ray: bool = False
         ) -> SweepOutcome:
    from fairsweep.sweep.progress import Progress
    from fairsweep.sweep.trial import read_trial_record

    search = spec.sweep.search
    num_trials = len(plan.trials) if search is None else search.n_trials * search.seeds_per_trial
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairsweep-mlflow") as opening:
        # MLflow's imports and store (its tables, on a first run) take seconds, and so does Ray's start:
        # the one on a thread while the other starts here (Ray wants the main thread).
        opened = opening.submit(_open_tracking, spec, num_trials)
        if start_local_ray:
            _connect_ray(None)
        tracker, parent, done = opened.result()
    outcome = SweepOutcome(plan, records={}, trained={k: 0 for k in STAGE_KINDS}, parent_run_id=parent)
    by_id = {t.id: t for t in plan.trials}
    pending: list[Trial] = []  # the trials handed to Tune (a search's, as its searcher hands them out)

    finishing = threading.Lock()  # the logging thread and the search's reuse of earlier trials

    def finish(trial_id: str) -> None:
        with finishing:
            _finish(trial_id)

    def _finish(trial_id: str) -> None:
        record = read_trial_record(storage, trial_id)
        if record is None:
            return
        # The record may come from another sweep sharing the storage: name it as this sweep does.
        trial = by_id[trial_id]
        record.update(name=trial.name, values=trial.values, spec=trial.spec.model_dump(mode="json"))
        if trial_id not in done:
            try:
                done[trial_id] = _log_trial(tracker, parent, trial, record, storage)
            except Exception as exc:  # the trial's results are safe in the store; re-running logs them
                outcome.failed[trial.name] = f"logging to MLflow failed: {exc}"
                return
        outcome.records[trial_id] = record

    def reuse(trial: Trial) -> dict | None:
        """The record of a trial finished earlier (logged now if its driver died before logging it), or
        None if the trial is to run."""
        finish(trial.id)
        if trial.id in outcome.records:
            outcome.skipped += 1
            if progress is not None:
                progress.trial_skipped()
            return outcome.records[trial.id]
        return None

    def register(trial: Trial) -> None:
        """A search trial joins the plan (the grid's are in it from the start)."""
        if trial.id not in by_id:
            by_id[trial.id] = trial
            plan.trials.append(trial)

    def on_done(trial_id: str) -> None:
        finish(trial_id)
        record = outcome.records.get(trial_id)
        if record is not None:
            for kind, trained in record["trained"].items():
                outcome.trained[kind] += int(trained)
            outcome.lock_wait += sum(record["lock_wait_s"].values())
            progress.trial_done(record["name"], record["metrics"], record["trained"])

    progress = None
    searcher = None
    if search is None:
        pending = [t for t in plan.trials if reuse(t) is None and t.name not in outcome.failed]
        progress = Progress(len(plan.trials), already_done=outcome.skipped, console=console)
    else:
        from fairsweep.sweep.search import StudySearcher, open_study

        searcher = StudySearcher(open_study(spec, storage), spec, register, reuse,
                                 lambda trial_id: read_trial_record(storage, trial_id))
        searcher.adopt_finished()
        pending = searcher.handed_out
        progress = Progress(searcher.total_trials, already_done=outcome.skipped, console=console,
                            objectives=search.objectives)

    if pending or (searcher is not None and searcher.has_work):
        # Tune waits for its callbacks before it starts the next trial: log on a thread of its own instead
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairsweep-logging") as logging_thread:
            logged = []
            failures = _run_with_tune(spec, storage, lambda trial_id: logged.append(logging_thread.submit(on_done, trial_id)),
                                      progress, by_id, pending=pending, searcher=searcher)
        for future in logged:  # every finished trial is logged by now; an error in logging one is raised here
            future.result()
        for trial_id, error in failures.items():
            outcome.failed[by_id[trial_id].name if trial_id in by_id else trial_id] = error
        for trial in pending:  # a completion the callback missed is still logged
            if trial.id not in outcome.records and trial.name not in outcome.failed:
                on_done(trial.id)
    progress.close()
    for trial_id, metrics in mitigation_effects(outcome, storage).items():
        outcome.records[trial_id]["metrics"].update(metrics)
        _add_to_record(storage, trial_id, metrics)
        if trial_id in done:
            tracker.log_missing_metrics(done[trial_id], metrics)
    outcome.seconds = time.time() - started
    table = results_table(outcome)
    summary = {"trials_finished": len(outcome.records), "trials_failed": len(outcome.failed),
               "wall_seconds": outcome.seconds, "lock_wait_seconds": outcome.lock_wait}
    summary.update({f"stages_trained/{k}": v for k, v in outcome.trained.items()})
    tracker.finish_sweep(parent, table.to_csv(index=False) if table is not None else "", summary,
                         failed=bool(outcome.failed))
    return outcome


def _open_tracking(spec: Spec, num_trials: int):
    """The sweep's MLflow tracker, its parent run and the trial runs it finished earlier (trial id -> run id)."""
    from fairsweep.tracking import Tracker

    tracker = Tracker(spec.tracking.uri, spec.experiment)
    parent = tracker.sweep_run(spec, num_trials)
    return tracker, parent, tracker.finished_trials(parent)


def _run_with_tune(spec: Spec, storage: Path, on_done, progress, by_id: dict[str, Trial],
                   pending: list[Trial], searcher=None) -> dict[str, str]:
    """Schedule trials with Ray Tune (one trainable call per trial): `pending`, the grid's, or those the
    search's `searcher` hands out as it goes. Returns failures by trial id."""
    _ray_environment()
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    started_here = not ray.is_initialized()
    if started_here:
        _connect_ray(None)
    try:
        res = spec.resources
        if searcher is None:
            grid = {t.id: {"spec": t.spec.model_dump(mode="json"), "values": t.values} for t in pending}
            parameters = {"trials": grid}
            param_space = {"trial_id": tune.grid_search([t.id for t in pending])}
            tune_config = tune.TuneConfig(max_concurrent_trials=spec.sweep.max_concurrent_trials, reuse_actors=True)
        else:
            parameters = {"search_spec": spec.model_dump(mode="json")}
            param_space = {}
            tune_config = tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True,
                                          max_concurrent_trials=spec.sweep.max_concurrent_trials)
        trainable = tune.with_resources(
            tune.with_parameters(tune_trial, storage=str(storage), device=res.device,
                                 threads=max(1, int(res.cpus_per_trial)), data_env=os.environ.get(DATA_ENV),
                                 **parameters),
            {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(storage / "tune"),
                failure_config=tune.FailureConfig(max_failures=res.max_failures),
                callbacks=[_driver_callback(on_done, progress, by_id), JsonLoggerCallback()],
                verbose=0,
            ),
        )
        results = tuner.fit()
        failures = {}
        for result in results:
            if result.error is not None:
                # a trial that failed before its trainable started has no config in its result
                trial_id = (result.config or {}).get("trial_id")
                failures[trial_id or f"<trial {len(failures)}>"] = _one_line(result.error)
        return failures
    finally:
        if started_here:
            ray.shutdown()


def _driver_callback(on_done, progress, by_id: dict[str, Trial]):
    """A Tune callback in the driver: logs each finished trial to MLflow at once, updates progress."""
    from ray import tune

    class DriverCallback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.trial_started()

        def on_trial_complete(self, iteration, trials, trial, **info):
            on_done(trial.config["trial_id"])

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.trial_failed(by_id[trial.config["trial_id"]].name)

        def __reduce__(self):  # Tune pickles its run config; the driver-side state stays behind
            return (tune.Callback, ())

    return DriverCallback()


def tune_trial(config: dict, *, storage: str, device: str, threads: int, data_env: str | None = None,
               trials: dict[str, dict] | None = None, search_spec: dict | None = None) -> None:
    """The Ray Tune trainable: one trial, its stages through the shared store.

    A grid trial is looked up in `trials` by its id; a search trial is the search's spec with the
    config's values set. Its data comes decoded from the cache under `storage`; `data_env` is the
    driver's $FAIRSWEEP_DATA, for workers started without it (a worker's own setting wins)."""
    import ray
    import torch
    from ray import tune

    from fairsweep.sweep.store import StageStore
    from fairsweep.sweep.trial import run_trial

    if data_env:
        os.environ.setdefault(DATA_ENV, data_env)
    torch.set_num_threads(threads)
    if trials is not None:
        entry = trials[config["trial_id"]]
        trial = Trial(Spec.model_validate(entry["spec"]), entry["values"])
    else:
        trial = Trial(Spec.model_validate(search_spec).with_values(config["values"]), config["values"])
    assert trial.id == config["trial_id"], "the worker's trial differs from the driver's"
    record = run_trial(trial, StageStore(storage), device, node=ray.get_runtime_context().get_node_id())
    report = {k: v for k, v in record["metrics"].items() if isinstance(v, float) and math.isfinite(v)}
    report.update({f"trained_{k}": int(v) for k, v in record["trained"].items()})
    tune.report(report)


def _add_to_record(storage: Path, trial_id: str, metrics: dict[str, float]) -> None:
    """Metrics known only once other trials finished (e.g. Figure 9's), into the stored trial record."""
    from fairsweep.files import write_json_atomic
    from fairsweep.sweep.trial import read_trial_record, trial_record_path

    record = read_trial_record(storage, trial_id)
    if record is not None and any(json.dumps(record["metrics"].get(k)) != json.dumps(v) for k, v in metrics.items()):
        record["metrics"].update(metrics)
        write_json_atomic(trial_record_path(storage, trial_id), record)


def _log_trial(tracker, parent: str, trial: Trial, record: dict, storage: Path) -> str:
    """Log a finished trial with its stages' curves and its final model."""
    from fairsweep.sweep.store import StageStore
    from fairsweep.sweep.trial import build_model

    store = StageStore(storage)
    curves: dict[str, list[float]] = {}
    for kind in STAGE_KINDS:
        stage = trial.stages[kind]
        if not store.has(stage):
            continue
        history = store.result(stage)["history"]
        for key in sorted({k for row in history for k in row} - {"epoch"}):
            curves[f"{kind}/{key}"] = [row.get(key, math.nan) for row in history]
    model = None
    if trial.spec.tracking.log_models and store.has(trial.stages["finetune"]):
        model = build_model(trial.spec, record["num_classes"], tuple(record["input_shape"]),
                            record.get("architecture"))
        model.load_state_dict(store.load(trial.stages["finetune"]).state)
        model.eval()
    return tracker.log_trial(parent, record, curves, model)


def mitigation_effects(outcome: SweepOutcome, storage: Path) -> dict[str, dict[str, float]]:
    """The paper's Figure 9, per finished trial with µ > 0 whose plain-KD twin (the same trial with µ = 0,
    from this sweep or any other sharing the storage) finished too: the relative accuracy drop of the
    mitigated model against the twin, `mitigation_drop_pct` overall and `mitigation_drop_pct/<g>` per
    group, (acc_twin − acc) / acc_twin × 100; negative where the mitigation helped."""
    from fairsweep.metrics.groups import GroupMetrics, relative_drop
    from fairsweep.sweep.trial import read_trial_record

    effects = {}
    for trial in outcome.plan.trials:
        record = outcome.records.get(trial.id)
        if record is None or trial.spec.finetune.mu == 0:
            continue
        twin_id = Trial(trial.spec.with_values({"finetune.mu": 0.0}), {}).id
        twin = outcome.records.get(twin_id) or read_trial_record(storage, twin_id)
        if twin is None:
            continue
        drop = relative_drop(GroupMetrics(**twin["accuracy"]["final"]), GroupMetrics(**record["accuracy"]["final"]))
        effects[trial.id] = {"mitigation_drop_pct": drop.overall, **drop.keyed("mitigation_drop_pct")}
    return effects


def results_table(outcome: SweepOutcome):
    """Mean ± std over seeds of the headline metrics, per combination of the other grid values."""
    import pandas as pd

    if not outcome.records:
        return None
    rows = []
    for record in outcome.records.values():
        row = {k: v for k, v in record["values"].items()}
        row.update({m: record["metrics"].get(m, math.nan) for m in TABLE_METRICS})
        rows.append(row)
    frame = pd.DataFrame(rows)
    metrics = [m for m in TABLE_METRICS if frame[m].notna().any()]
    keys = [k for k in outcome.plan.spec.sweep.varied_keys if k != "seed"]
    if not keys:
        frame["all"] = "all"
        keys = ["all"]
    stats = frame.groupby(keys, sort=True)[metrics].agg(["mean", "std", "count"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    return stats.reset_index()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
