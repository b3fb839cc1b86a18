"""What the sweep benchmarks share: the digits µ-ablation spec (its trials shortened or as shipped), fresh
storage per run, a local Ray started once (outside the timings), the machine's load."""

from __future__ import annotations

import argparse
import atexit
import io
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from rich.console import Console

from fairsweep.spec import Spec, load_spec

MU_ABLATION = Path(__file__).resolve().parents[1] / "sweeps" / "digits_mu_ablation.yaml"  # the figures in docs/
QUIET = Console(file=io.StringIO())  # the sweep's progress and tables are not what is measured


def sweep_arguments(doc: str, flags: dict[str, str] | None = None) -> argparse.Namespace:
    """What every sweep benchmark takes: `--repeats` and `--set KEY=VALUE` (spec overrides, repeatable);
    `flags` adds on/off options of its own (name -> help)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    for name, text in (flags or {}).items():
        parser.add_argument(f"--{name}", action="store_true", help=text)
    return parser.parse_args()


SHORTER = ["base.epochs=10", "linearize.snl.lambda_init=0.01", "linearize.snl.lambda_growth=2.0", "finetune.epochs=5"]


def ablation_spec(overrides: list[str], shorter: bool = True) -> Spec:
    """The embedded µ-ablation, with shorter trials unless `shorter` is False (base 10 epochs, SNL's λ
    growing faster, finetuning 5 epochs), then `overrides`."""
    return load_spec(MU_ABLATION, [*(SHORTER if shorter else []), *overrides])


def fresh_storage(tag: str) -> Path:
    """An empty directory for one run's stage store (or MLflow database), removed when the benchmark exits."""
    path = Path(tempfile.mkdtemp(prefix=f"fairsweep-bench-{tag}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def with_tracking(spec: Spec, uri: str) -> Spec:
    """`spec` logging to `uri`, in an experiment of its own (a sweep run there is never resumed)."""
    raw = spec.model_dump(mode="json")
    raw["tracking"].update(uri=uri, experiment=f"{spec.name}-{uuid.uuid4().hex[:8]}")
    return Spec.model_validate(raw)


def create_tracking_db() -> str:
    """A fresh MLflow database, created now (a one-time cost of its first sweep: MLflow builds its tables)."""
    from fairsweep.tracking import Tracker

    uri = f"sqlite:///{fresh_storage('mlflow')}/mlflow.db"
    Tracker(uri, "setup")
    return uri


def start_local_ray() -> None:
    """The local Ray that `fairsweep run` would start; started once here so that every sweep timed
    after it finds Ray running (its start-up is timed and reported on its own)."""
    from fairsweep.sweep.ray_session import RaySession

    RaySession(None).connect()  # left running: the sweeps timed after it find it (RaySession leaves it)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
