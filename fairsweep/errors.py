"""User-facing errors: one paragraph each, exit status 2, never a traceback."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in what the user gave us (spec, flags, data). Holds one paragraph per problem."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n\n".join(self.problems))


class StageError(RuntimeError):
    """A stage could not produce its output (e.g. SNL never reached its budget)."""


class DamagedFileWarning(UserWarning):
    """A file of the storage could not be read (a kill or a power loss cut it short): moved aside, recomputed."""


# Messages are written once here and asserted in tests.
UNKNOWN_KEY = "unknown key `{key}`{hint}. Valid keys here: {valid}."
UNKNOWN_NAME = "unknown {what} `{name}`{hint}. Available: {valid}."
BAD_VALUE = "`{key}`: {reason}, got {value!r}."
SPEC_NOT_FOUND = "spec file not found: {path} (looked at {resolved})."
SPEC_IS_DIRECTORY = "{path} is a directory, not a spec file; the specs in it: {specs}."
SWEEP_RUNNING = ("a sweep is running on the storage {path}; `fairsweep gc` removes nothing while one runs (it "
                 "could remove what the sweep is about to load). Run it once the sweep has ended, or with --dry-run.")
STORAGE_NOT_USABLE = ("`--storage {path}`: {reason}; name a directory this process can write (it is created if "
                      "missing), e.g. --storage fairsweep-runs.")
TRACKING_UNREACHABLE = ("`tracking.uri` {uri}: {reason}. Start the tracking server (`mlflow server --port {port}`), "
                        "or log to a local database with --set tracking.uri=sqlite:///mlflow.db.")
TRACKING_NOT_WRITABLE = ("`tracking.uri` {uri}: {reason}; use a database path in a directory this process can "
                         "write, e.g. --set tracking.uri=sqlite:///mlflow.db.")
SPEC_NOT_YAML = "spec file {path} is not valid YAML: {reason}"
SPEC_NOT_MAPPING = "spec file {path} must hold a mapping of sections (data, model, ...), got {kind}."
GRID_AND_SEARCH = ("a sweep has either a `grid` (every combination of values) or a `search` (Optuna), not both; "
                   "remove one of them.")
SEED_IN_SPACE = ("`sweep.search.space.seed`: seeds are not searched; set `sweep.search.seeds_per_trial` (each "
                 "Optuna trial then runs seeds spec.seed, spec.seed + 1, ...).")
NO_SWEEP_RUN = (
    "no sweep of {what} in the MLflow store {uri}; run it first with `fairsweep run`, in the directory it "
    "is to run in (or give the store: tracking.uri in the spec, --tracking-uri for an experiment name)."
)
NO_FINISHED_TRIALS = "the sweep of {what} in {uri} has no finished trial yet; nothing to put on a front."
BAD_OBJECTIVE = "`--objective {item}`: expected METRIC:max or METRIC:min, e.g. `--objective acc:max`."
FEW_OBJECTIVES = "a Pareto front needs at least two objectives, got {objectives}."
BAD_REFERENCE = (
    "`--reference {value}`: expected {count} comma-separated numbers, one per objective in order "
    "({objectives}), e.g. `--reference {example}`."
)
BAD_OVERRIDE = "`--set {item}`: expected KEY=VALUE with a dotted key, e.g. `--set finetune.mu=[0,0.01]`."
BUDGET_RANGE = (
    "`{key}`: budget must be > 0 and at most the model's {total} ReLUs "
    "(a number below 1 is a fraction of them), got {value!r}."
)
DR_BUDGET_BELOW = (
    "`{key}`: DeepReDuce's configurations of {arch} at input {shape} have {low} to {high} ReLUs, and the budget "
    "{value:g} ({budget} ReLUs) is below the smallest; feasible budgets are {low} to {high} (smaller factors in "
    "linearize.deepreduce.width_factors or resolution_factors make smaller configurations)."
)
DR_NO_CONFIGURATION = (
    "`linearize.deepreduce`: {arch} cannot take a {shape} input at any of the width and resolution factors "
    "given; include 1.0 in width_factors and resolution_factors."
)
ARCH_INPUT = "{arch} cannot take a {shape} input: {reason}."
STEM_RELU_NOT_TAKEN = (
    "`{key}` is {value}, but architecture `{arch}` has no stem_relu option (whether a ReLU follows the stem): "
    "only {takes} take it. Leave it out for `{arch}`."
)
INPUT_NOT_ACCEPTED = "`model.arch`: {arch} cannot take the inputs of dataset `{dataset}` ({shape} per sample): {reason}."
BUDGET_NOT_INTEGER = "`{key}`: an absolute budget (>= 1) must be a whole number of ReLUs, got {value!r}."
NO_RAY_CLUSTER = (
    "could not connect to a Ray cluster at `{address}` ({reason}); start one with `ray start --head` "
    "or leave out --address to run on a local Ray."
)
NO_GPU = (
    "`resources.device` is `cuda` but no CUDA GPU is visible to torch on this machine; "
    "use `--set resources.device=cpu`."
)
DATA_DIFFERS = (
    "the data this worker ({host}) loaded for dataset `{dataset}` differs from the data the sweep was planned "
    "with (content digest {ours}, planned {planned}): every node must see the same dataset files (and the "
    "same $FAIRSWEEP_DATA or data.root)."
)
SNL_NOT_CONVERGED = (
    "SNL did not reach its budget of {budget} ReLUs within linearize.snl.max_epochs={epochs} epochs "
    "(still {live} live gates, λ={lam:.3g}); raise linearize.snl.max_epochs, linearize.snl.lambda_growth or "
    "linearize.snl.lr, or lower linearize.snl.lambda_warmup."
)
RESOURCES_UNAVAILABLE = (
    "`resources.{key}` is {need} but {where} has {have} {unit}; a trial could never be scheduled. "
    "{hint}"
)

DATA_ROOT_UNSET = (
    "`data.root`: dataset `{name}` loads from a local directory; set data.root (or --set data.root=DIR) "
    "or the environment variable {env}."
)
NO_SUCH_ATTRIBUTE = "`{key}`: {dataset} has no {what} attribute `{value}`{hint}; its {what} attributes: {valid}.{fix}"
OWN_TEST_SET = "`{key}` is {value!r}, but {dataset} ships its own test set, which is the test split.{fix}"
ADD_SET = " Add `--set {key}={value}`{also}."  # the fix of a `data` key that does not fit the dataset
LEAVE_OUT_OF_GRID = " Leave it out of the grid."
KEY_IGNORED = "note: `{key}` is read by {readers} only; {dataset} ignores it."
DATA_NOT_FOUND = (
    "dataset `{name}`: {missing} not found in {searched}. It expects {expected}. It is published at "
    "{published}; fairsweep never downloads data."
)
GROUP_KEYS_COLLIDE = (
    "dataset `{name}`: groups {first!r} and {second!r} would share the MLflow key `{key}` (a name written like "
    "another's shortened key); rename one of them in the data.")
DAMAGED_FILE = "{path} cannot be read ({reason}); moved it to {moved}, to be computed again."
CORRUPT_FILE = "dataset `{name}`: cannot read {path}: {reason}."
CSV_MISSING_COLUMN = "dataset `{name}`: {path} has no column `{column}` (`{key}`); its columns are: {columns}."
CSV_BAD_VALUE = "dataset `{name}`: {path}, line {line}, column `{column}`: {reason}, got {value!r}."
CSV_OUTSIDE = ("the image resolves to {resolved}, outside the CSV's folder {folder}{also}; keep the images "
               "inside it, or set `data.csv.allow_outside: true` (--set data.csv.allow_outside=true) to read them "
               "from anywhere")
STRATUM_TOO_SMALL = (
    "the samples with target `{target}` in group `{group}` number {count}; a stratified split needs at "
    "least 2 of every target and group combination. Use more data or a coarser target or group."
)
GROUP_TOO_SMALL = (
    "group `{group}` has {count} samples in the {split} split, fewer than data.min_group_size={minimum}; "
    "its accuracy would mean little. Keep more of it (data.imbalance, data.val_fraction, "
    "data.test_fraction) or lower data.min_group_size."
)


def closest(name: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return close[0] if close else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = closest(name, choices)
    return f" (did you mean `{close}`?)" if close else ""


def unknown_name(what: str, name: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    return UNKNOWN_NAME.format(what=what, name=name, hint=did_you_mean(name, choices), valid=", ".join(choices))


def unwritable(folder) -> str | None:
    """Why this process could not create files in `folder` (made later if missing), or None if it could:
    a file is tried in the folder, or in the nearest ancestor that exists, and removed; permissions alone
    do not tell (root, read-only mounts, /proc). Nothing is left behind."""
    import tempfile
    from pathlib import Path

    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        return f"{existing} cannot be written ({exc.strerror or exc})"
    return None


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxset = 2, 4, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = 80


class Shown:
    """A value as a message shows it: its repr, cut short (a YAML alias bomb is megabytes of repr)."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return _SHORT.repr(self.value)


MAX_GRID_TRIALS = 100_000
GRID_TOO_LARGE = ("`sweep.grid` makes {count:,} trials ({sizes}), more than fairsweep plans in one sweep "
                  f"({MAX_GRID_TRIALS:,}); split it into several specs sharing one storage, or search with "
                  "`sweep.search`.")
