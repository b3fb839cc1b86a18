"""Optuna search of the Pareto front, scheduled by Ray Tune.

The driver owns the Optuna study and drives it by ask and tell from a Ray Tune `Searcher`: each
Optuna trial (a point of `sweep.search.space`) becomes `seeds_per_trial` ordinary fairsweep trials,
which Tune runs like grid trials (same trainable, stage store, MLflow logging); when the last seed of
an Optuna trial finishes, the study is told the seed means of the objectives.

The study lives in `<storage>/optuna.db` (SQLite in WAL mode, openable by `optuna-dashboard` while the
search runs), named after the spec's content hash. Only the driver writes to it, so trials running in
parallel never contend for it.
Re-running the same command continues the study: it asks only for the trials still missing from
`n_trials` finished ones, takes over the trials a killed driver left running (their seeds come from
the stage store and the trial records, nothing is trained again), and new seeds of a configuration
already evaluated are reused from the store as well.

With `seeds: adaptive` a configuration runs one seed, and one more at a time, up to
`seeds_per_trial`, only while it could still be on the Pareto front: its seed means, each objective
moved `Z` standard errors towards better, must not be dominated by any other configuration's means
moved `Z` standard errors towards worse (`could_reach_front`). A configuration's standard error is
its seeds' std over √n; with one seed, the pooled std of the configurations that have several (none
yet: it goes on). The study is told the seed means of the seeds that ran, their number in the
trial's user attribute `seeds`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from fairsweep.files import SQLITE_TIMEOUT_S, sqlite_wal
from fairsweep.spec import SearchConfig, SearchParam, Spec
from fairsweep.sweep.plan import DigestFn, Trial
from fairsweep.sweep.records import TrialRecord
from fairsweep.sweep.tune_backend import trial_config

STUDY_FILE = "optuna.db"
OPTUNA_DIRECTIONS = {"max": "maximize", "min": "minimize"}
TRIAL_IDS_ATTR = "fairsweep_trial_ids"  # on each Optuna trial: its seeds' fairsweep trial ids
SEEDS_ATTR = "seeds"  # on each Optuna trial told: how many seeds its values are the means of
Z = 2.0  # standard errors of hope (and of doubt) in adaptive seeds


def could_reach_front(candidate: list[list[float]], others: list[list[list[float]]], higher_better: list[bool],
                      z: float = Z) -> bool:
    """Whether a configuration (its seeds' objective vectors) could still be non-dominated: its means moved
    `z` standard errors towards better are dominated by no other configuration's moved `z` towards worse."""
    pooled = _pooled_std([candidate, *others])
    sign = [1.0 if h else -1.0 for h in higher_better]

    def bound(seeds: list[list[float]], towards: float) -> list[float]:
        n = len(seeds)
        out = []
        for k, s in enumerate(sign):
            values = [v[k] * s for v in seeds]
            std = _std(values) if n > 1 else pooled[k]
            out.append(sum(values) / n + towards * z * std / math.sqrt(n))
        return out

    hopeful = bound(candidate, +1.0)
    if any(math.isnan(v) for v in hopeful):  # no spread known yet: cannot rule it out
        return True
    for other in others:
        doubtful = bound(other, -1.0)
        if all(d >= h for d, h in zip(doubtful, hopeful)) and any(d > h for d, h in zip(doubtful, hopeful)):
            return False
    return True


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _pooled_std(configurations: list[list[list[float]]]) -> list[float]:
    """Per objective, the pooled seed std of the configurations with two seeds or more (NaN if none has)."""
    several = [c for c in configurations if len(c) > 1]
    if not several:
        return [math.nan] * len(configurations[0][0])
    dof = sum(len(c) - 1 for c in several)
    return [math.sqrt(sum(_std([v[k] for v in c]) ** 2 * (len(c) - 1) for c in several) / dof)
            for k in range(len(configurations[0][0]))]


def study_database(storage: Path) -> Path:
    return Path(storage).expanduser().resolve() / STUDY_FILE


def study_url(storage: Path) -> str:
    return f"sqlite:///{study_database(storage)}"


def study_name(spec: Spec) -> str:
    return f"{spec.name}-{spec.content_hash()}"


def seed_trials(spec: Spec, params: dict[str, Any], digests: DigestFn) -> list[Trial]:
    """The fairsweep trials of one point of the search space: one per seed."""
    search = _search(spec)
    seeds = range(spec.seed, spec.seed + search.seeds_per_trial)
    return [Trial.of(spec, {**params, "seed": seed}, digests) for seed in seeds]


def open_study(spec: Spec, storage: Path):
    """The spec's study in the storage's SQLite database, created on first use."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = _search(spec)
    sqlite_wal(study_database(storage))  # `optuna-dashboard` reading the study while the search runs never stops it
    rdb = optuna.storages.RDBStorage(study_url(storage), engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    study = optuna.create_study(storage=rdb, study_name=study_name(spec), load_if_exists=True,
                                directions=[OPTUNA_DIRECTIONS[d] for d in search.objectives.values()])
    # Seeded by how many trials the study already holds, so a resumed study does not draw the same
    # points again, and the same command on the same study state asks the same points.
    study.sampler = make_sampler(search, offset=len(study.get_trials(deepcopy=False)))
    return study


def make_sampler(search: SearchConfig, offset: int = 0):
    import optuna

    seed = None if search.sampler_seed is None else search.sampler_seed + offset
    samplers = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
                "random": optuna.samplers.RandomSampler}
    return samplers[search.sampler](seed=seed)


def distribution(param: SearchParam):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.type == "categorical":
        return CategoricalDistribution(param.choices)
    if param.type == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def objective_values(records: list[TrialRecord], objectives: dict[str, str]) -> list[float] | None:
    """The seed means of the objectives, or None if one is not a finite number."""
    values = [sum(r.metrics.get(m, math.nan) for r in records) / len(records) for m in objectives]
    return values if all(math.isfinite(v) for v in values) else None


@dataclass
class _OpenTrial:
    """An Optuna trial waiting for its seeds: its candidate seeds' trials, how many are taken so far (all,
    with fixed seeds), and fairsweep trial id -> record (None: it failed) of those that ended."""

    trials: list[Trial]
    taken: int = 0
    records: dict[str, TrialRecord | None] = field(default_factory=dict)


class StudySearcher(Searcher):
    """A Ray Tune searcher that asks the Optuna study for points and tells it their seed means.

    `digests` gives each data configuration's content digest; `register(trial)` is called for each
    fairsweep trial of the search before anything else; `reuse(trial)` returns the record of a trial
    finished earlier (logging it if needed) or None; `read_record(trial_id)` reads a dispatched trial's
    record once Tune reports it complete.
    """

    def __init__(self, study, spec: Spec, digests: DigestFn, register: Callable[[Trial], None],
                 reuse: Callable[[Trial], TrialRecord | None], read_record: Callable[[str], TrialRecord | None]):
        import optuna

        super().__init__()
        self.study, self.spec, self.digests = study, spec, digests
        self.search = _search(spec)
        self.register, self.reuse, self.read_record = register, reuse, read_record
        self.distributions = {key: distribution(p) for key, p in self.search.space.items()}
        trials = study.get_trials(deepcopy=False)
        self.adaptive = self.search.seeds == "adaptive"
        self.higher_better = [d == "max" for d in self.search.objectives.values()]
        self.values: dict[int, list[list[float]]] = {}  # Optuna number -> its seeds' objective vectors so far
        self.optuna_ids = {t.number: t._trial_id for t in trials}  # number -> the storage's trial id
        self.finished = [(t.number, t.params) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        # a driver killed mid-search leaves its trials RUNNING: take them over
        self.to_resume = [(t.number, t.params) for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        self.to_ask = max(0, self.search.n_trials - len(self.finished) - len(self.to_resume))
        optuna_trials = len(self.finished) + len(self.to_resume) + self.to_ask
        self.total_trials = optuna_trials * self.search.seeds_per_trial  # fairsweep trials, earlier ones included
        self.queue: deque[tuple[int, Trial]] = deque()  # seeds waiting for Tune
        self.open: dict[int, _OpenTrial] = {}  # Optuna trial number -> its seeds' results
        self.dispatched: dict[str, tuple[int, str]] = {}  # Tune trial id -> (Optuna number, fairsweep id)
        self.handed_out: list[Trial] = []  # every fairsweep trial given to Tune
        self.halted = False

    @property
    def has_work(self) -> bool:
        """Whether any Optuna trial is left to ask or to take over."""
        return bool(self.to_ask or self.to_resume)

    def adopt_finished(self) -> None:
        """Bring the seeds of the study's finished trials into this run's results (none runs again)."""
        for number, params in self.finished:
            for trial in seed_trials(self.spec, params, self.digests):
                if self.adaptive and self.read_record(trial.id) is None:
                    break  # the seeds after those an adaptive search ran were never run
                self.register(trial)
                record = self.reuse(trial)
                if record is not None:
                    self._note(number, record)

    def halt(self) -> None:
        """Hand out no more seeds (from a signal handler: a flag); unfinished Optuna trials stay RUNNING, for
        the next run to take over."""
        self.halted = True

    def another_run(self) -> bool:
        """A search is one Tuner run: what it has asked and what ran are the study's."""
        return False

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.halted:
            return Searcher.FINISHED
        while not self.queue and (self.to_resume or self.to_ask):
            if self.to_resume:
                self._open(*self.to_resume.pop(0))
            else:
                self.to_ask -= 1
                asked = self.study.ask(self.distributions)
                asked.set_user_attr(TRIAL_IDS_ATTR, [t.id for t in seed_trials(self.spec, asked.params, self.digests)])
                self.optuna_ids[asked.number] = asked._trial_id
                self._open(asked.number, asked.params)
        if not self.queue:
            return Searcher.FINISHED if not self.open else None  # None: wait for running seeds
        number, trial = self.queue.popleft()
        self.dispatched[trial_id] = (number, trial.id)
        self.handed_out.append(trial)
        return trial_config(trial)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number, fairsweep_id = self.dispatched.pop(trial_id)
        record = None if error else self.read_record(fairsweep_id)
        self.open[number].records[fairsweep_id] = record
        if record is not None:
            self._note(number, record)
        self._tell_if_complete(number)

    def __reduce__(self):  # Tune pickles its state; the study and the driver's callbacks stay behind
        return (Searcher, ())

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study's storage is the search's state, and resuming reads it."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def _open(self, number: int, params: dict[str, Any]) -> None:
        entry = self.open[number] = _OpenTrial(seed_trials(self.spec, params, self.digests))
        self._take(number, 1 if self.adaptive else len(entry.trials))
        self._tell_if_complete(number)

    def _take(self, number: int, count: int) -> None:
        """The configuration's next `count` seeds: reused where a record exists, queued for Tune otherwise."""
        entry = self.open[number]
        for trial in entry.trials[entry.taken:entry.taken + count]:
            entry.taken += 1
            self.register(trial)
            record = self.reuse(trial)
            if record is not None:
                entry.records[trial.id] = record
                self._note(number, record)
            else:
                self.queue.append((number, trial))

    def _note(self, number: int, record: TrialRecord) -> None:
        values = objective_values([record], self.search.objectives)
        if values is not None:
            self.values.setdefault(number, []).append(values)

    def _tell_if_complete(self, number: int) -> None:
        import optuna

        entry = self.open[number]
        while len(entry.records) == entry.taken < len(entry.trials) and None not in entry.records.values() \
                and self.values.get(number) \
                and could_reach_front(self.values[number], [v for n, v in self.values.items() if n != number and v],
                                      self.higher_better):
            self._take(number, 1)  # one more seed (perhaps stored already)
        if len(entry.records) < entry.taken:
            return
        del self.open[number]
        records = list(entry.records.values())
        values = None if None in records else objective_values(records, self.search.objectives)
        if values is None:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            optuna.trial.Trial(self.study, self.optuna_ids[number]).set_user_attr(SEEDS_ATTR, len(records))
            self.study.tell(number, values)


def _search(spec: Spec) -> SearchConfig:
    if spec.sweep.search is None:
        raise ValueError(f"spec {spec.name} has no sweep.search")
    return spec.sweep.search
