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


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): one worker a CPU, at most 4. Each module runs in one worker
    (`--dist loadfile`), the sweeps' modules starting Rays and trial processes of their own beside the others."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


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
