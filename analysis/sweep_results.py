"""What the analysis scripts share: the command line naming a finished sweep, its trial records, and
logging their outputs to the sweep's MLflow run."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairsweep.data import ContentDigests
from fairsweep.data.cache import DataCache
from fairsweep.spec import Spec, load_spec
from fairsweep.sweep.plan import Plan, make_plan
from fairsweep.sweep.records import TrialRecord, read_trial_record
from fairsweep.sweep.store import StageStore
from fairsweep.tracking import Tracker


def sweep_parser(description: str) -> argparse.ArgumentParser:
    """SPEC, `--set` (the overrides the sweep ran with) and `--storage`, as `fairsweep run` takes them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("spec")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the same --set overrides the sweep ran with")
    parser.add_argument("--storage", default="fairsweep-runs")
    return parser


def finished_records(args: argparse.Namespace) -> tuple[Spec, Plan, dict[str, TrialRecord]]:
    """The spec, its plan and the records of its finished trials (by trial id); exits if there are none."""
    spec = load_spec(args.spec, args.overrides)
    plan = make_plan(spec, ContentDigests(DataCache(StageStore(args.storage).data_cache)))
    records = {t.id: r for t in plan.trials if (r := read_trial_record(Path(args.storage), t.id)) is not None}
    if not records:
        raise SystemExit(f"no finished trial of {args.spec} under {args.storage}: run `fairsweep run {args.spec}` first")
    return spec, plan, records


def log_to_sweep_run(spec: Spec, paths: list[Path]) -> None:
    """Log `paths` under `figures/` to the sweep's MLflow run, if the tracking store has one."""
    tracker = Tracker(spec.tracking.uri, spec.experiment)
    run_id = tracker.find_sweep_run(spec)
    if run_id is not None:
        for path in paths:
            tracker.client.log_artifact(run_id, str(path), "figures")
        print(f"logged to MLflow run {run_id} (experiment '{spec.experiment}')")
