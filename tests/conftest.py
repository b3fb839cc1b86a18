import copy
import os
import sqlite3
import threading
from contextlib import closing, contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
MU_ABLATION = ROOT / "sweeps" / "mu_ablation.yaml"  # the default sweep (glyphs)
DIGITS_MU_ABLATION = ROOT / "sweeps" / "digits_mu_ablation.yaml"  # the same grid on digits, quicker

# A spec small enough to train in seconds: the embedded default, shortened.
TINY = {
    "name": "tiny",
    "data": {"dataset": "digits", "imbalance": {"minority_classes": [5, 6, 7, 8, 9], "minority_keep": 0.25}},
    "model": {"arch": "small_cnn", "width": 4},
    "base": {"epochs": 3, "lr": 0.05},
    # λ from 3e-2: with SNL's 5-epoch warm-up the gates fall at once in the fifth epoch (at 1e-2 they fell to just
    # above some budgets, and Adam's 0.02 steps kept them circling the 0.01 threshold while λ grew)
    "linearize": {"budget": 0.05, "snl": {"lr": 0.02, "lambda_init": 3e-2, "lambda_growth": 2.0, "max_epochs": 60}},
    "finetune": {"epochs": 2, "lr": 0.01, "mu": 0.0},
}

# the same reduction of digits_mu_ablation.yaml, as CLI overrides (1 seed, 2 budgets, 2 µ, few epochs)
TINY_OVERRIDES = [
    "seed=[0]", "linearize.budget=[0.03,0.1]", "finetune.mu=[0,0.01]", "model.width=8",
    "linearize.snl.lambda_init=0.01", "linearize.snl.lambda_growth=2.0", "finetune.epochs=2",
]
# for a sweep whose test is not about MLflow's models: logging the Pareto front's costs each finished sweep
# torch.export's first call (about 8 s) and a few seconds a model (tests/test_logged_models.py tests them)
NO_MODELS = "tracking.log_models=none"


@pytest.fixture
def tiny_raw():
    return copy.deepcopy(TINY)


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    yield


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ray_token()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): one worker a CPU, at most 4; the sweeps' tests start Rays and trial
    processes of their own beside the other workers' tests."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


# The groups that take longest, from `--durations` (a sweep each, or several), handed to the workers first;
# the others follow in their modules' order.
LONGEST_FIRST = ["tests/test_cli_e2e.py", "tests/test_cli_e2e.py::own", "tests/test_mlflow_server.py",
                 "tests/test_cli_e2e.py::two_nodes",
                 "tests/test_benchmarks.py", "tests/test_search.py", "tests/test_checkpoint.py", "tests/test_store.py"]
# test_cli_e2e.py's tests that share no fixture with its others but `local_ray` (a sweep of their own each), and
# those on its two-node cluster: groups of their own, beside the tests of the finished sweep (`swept`)
E2E_OWN = {"test_a_failing_trial_is_listed_and_exits_1",
           "test_sigkill_of_the_driver_then_rerun_finishes_only_what_is_missing",
           "test_toy2d_sweep_and_its_figure_2", "test_mlflow_sends_no_usage_reports_from_a_sweep_process",
           "test_the_command_skips_the_interpreters_last_collection_once_done"}
E2E_TWO_NODES = {"test_resources_no_node_has_are_an_error_at_once",
                 "test_trials_run_on_both_nodes_and_the_sweep_survives_losing_one"}


def xdist_group(nodeid: str) -> str:
    """The tests that run in one worker, for the module-scoped fixtures they share (each worker starts its own
    `local_ray`: no two share a Ray): a module's, but test_cli_e2e.py's in three."""
    module, _, name = nodeid.partition("::")
    name = name.split("[")[0]
    if module.endswith("test_cli_e2e.py"):
        return f"{module}::own" if name in E2E_OWN else f"{module}::two_nodes" if name in E2E_TWO_NODES else module
    return module


def pytest_collection_modifyitems(config, items):
    """Under xdist, the longest groups first (`--no-loadscope-reorder` keeps this order)."""
    if not getattr(config, "workerinput", None):
        return
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    order = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(xdist_group(item.nodeid), len(rank)), order[item.nodeid]))


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadscope` (pyproject's addopts) on `xdist_group`'s groups rather than modules."""
    from xdist.scheduler import LoadScopeScheduling

    if config.getvalue("dist") != "loadscope":
        return None

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    return GroupScheduling(config, log)


def ray_token() -> None:
    """~/.ray/auth_token made now, once, if missing, as the first local Ray would (fairsweep restricts it to its
    owner, so does this): run side by side (pytest-xdist's workers), two Rays starting at once would each write
    a token of their own into the one file, and a driver could then hold a token its GCS or workers don't."""
    import secrets
    import tempfile

    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        return
    token.parent.mkdir(parents=True, exist_ok=True)
    fd, draft = tempfile.mkstemp(dir=token.parent, prefix=".auth_token.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))  # what Ray's `generate_new_authentication_token` makes
        os.link(draft, token)  # whole or not at all, and never over another's
    except FileExistsError:
        pass
    finally:
        os.unlink(draft)


@pytest.fixture(scope="session")
def real_data(tmp_path_factory):
    """Each file-backed dataset written in its published format, tiny: name -> what loading it gives."""
    from data_fixtures import write_cifar10, write_imagefolder_csv, write_svhn, write_utkface

    root = tmp_path_factory.mktemp("data")
    return {"cifar10": write_cifar10(root / "cifar10"), "svhn": write_svhn(root / "svhn"),
            "utkface": write_utkface(root / "utkface"), "imagefolder_csv": write_imagefolder_csv(root / "mine")}


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for a module's in-process sweeps (`fairsweep_cli("run", ...)`): a sweep uses the Ray already
    initialized in its process and leaves it running, so each saves Ray's start and shutdown and the imports of
    a process of its own. Shut down with the module: a later in-process `run` checks its resources against
    "this machine", not "this machine's Ray". A sweep whose trials need their own environment variables (the
    workers inherit this process's, from when Ray started), a signal or a crash runs as its own process."""
    from fairsweep.sweep.ray_session import RaySession

    with RaySession(None) as session:
        session.connect()
        yield session


def fairsweep_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> SimpleNamespace:
    """`fairsweep ARGS` run in this process, in `cwd` (with `env`'s variables set), as typer runs the command:
    its exit status, stdout and stderr. For the paths that end before any work (a user's mistake, a plan);
    what needs a process of its own (a signal, a crash, Ray's workers) runs `python -m fairsweep`. An
    exception the command does not handle ends with status 1 and its traceback in stderr."""
    import traceback

    from typer.testing import CliRunner

    from fairsweep.cli import app

    here = Path.cwd()
    saved = {key: os.environ.get(key) for key in env or {}}
    os.chdir(cwd)
    os.environ.update(env or {})
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(here)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=stderr)


@contextmanager
def read_transaction_held(database: Path, longest: float = 60.0):
    """A reader holding a read transaction open on the SQLite `database` (as `mlflow ui`, `optuna-dashboard` or
    a database browser may) while the block runs, for at most `longest` seconds; yields `held()`, whether it
    still holds it. A writer that must wait for readers waits for it past its busy timeout, and fails."""
    holding, release = threading.Event(), threading.Event()

    def read():
        with closing(sqlite3.connect(database, isolation_level=None)) as db:
            db.execute("BEGIN")
            db.execute("SELECT count(*) FROM sqlite_master").fetchall()  # the transaction reads: a read lock
            holding.set()
            release.wait(longest)
            db.execute("COMMIT")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert holding.wait(30)
    try:
        yield lambda: reader.is_alive() and not release.is_set()
    finally:
        release.set()
        reader.join()

