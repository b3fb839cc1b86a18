"""The commands that run or check a sweep: `validate`, `run`, `gc`."""

from __future__ import annotations

import errno
import signal
from typing import Annotated, Optional

import typer
from rich.table import Table

from fairsweep import errors
from fairsweep.errors import UserError

from fairsweep.cli.app import (DEFAULT_STORAGE, INTERRUPTED_EXIT, SetOpt, SpecArg, StorageOpt, VerboseOpt,
                               _Command, _fail, _set_verbose, app, console, err_console)
from fairsweep.cli.output import _print_outcome


@app.command(cls=_Command)
def validate(spec: SpecArg, set_: SetOpt = None, storage: StorageOpt = DEFAULT_STORAGE) -> None:
    """Check a spec without running it and print the plan: trials, unique stages of each kind, disk footprint."""
    from fairsweep.spec import load_spec
    from fairsweep.sweep.footprint import plan_footprint
    from fairsweep.sweep.preflight import describe_plan, preflight
    from fairsweep.sweep.ray_session import local_resources
    from fairsweep.sweep.plan import probe_points
    from fairsweep.sweep.search import study_name, study_url

    try:
        parsed = load_spec(spec, set_ or [])
        points = probe_points(parsed) if parsed.sweep.search is not None else None
        # a spec for a cluster cannot have its resources checked here, only its content
        checked = preflight(parsed, storage, None if parsed.resources.address else local_resources(), points=points)
    except UserError as exc:
        _fail(exc)
    plan = checked.plan
    search = parsed.sweep.search
    if search is None:
        info = describe_plan(plan, storage)
        console.print(f"spec [bold]{parsed.name}[/] is valid: {info['trials']} trials", highlight=False)
    else:
        objectives = ", ".join(f"{m} ({d})" for m, d in search.objectives.items())
        console.print(f"spec [bold]{parsed.name}[/] is valid: an Optuna search ({search.sampler}) of {search.n_trials} "
                      f"trials × {search.seeds_per_trial} seeds over {', '.join(search.space)}; objectives "
                      f"{objectives}; study {study_name(parsed)} in {study_url(storage)}", highlight=False,
                      soft_wrap=True)
    console.print("\n".join(checked.lines()), highlight=False, soft_wrap=True)
    if search is not None:
        return  # its trials, and so its stages, are known only as the search runs
    table = Table("stage", "unique", "already stored", "to run")
    for kind, counts in info["stages"].items():
        table.add_row(kind, str(counts["unique"]), str(counts["stored"]), str(counts["unique"] - counts["stored"]))
    console.print(table)
    console.print(plan_footprint(plan, checked.inputs_of).line(parsed.tracking.log_models), highlight=False, soft_wrap=True)


@app.command(cls=_Command)
def run(spec: SpecArg, set_: SetOpt = None, storage: StorageOpt = DEFAULT_STORAGE,
        address: Annotated[Optional[str], typer.Option(help="an existing Ray cluster: auto, or HEAD:6379")] = None,
        verbose: VerboseOpt = False) -> None:
    """Run a sweep; re-running the same command resumes it."""
    _set_verbose(verbose)
    from fairsweep.spec import load_spec
    from fairsweep.sweep.driver import run_sweep
    from fairsweep.tracking import SweepTracking, tracking_problems

    try:
        parsed = load_spec(spec, set_ or [])
        if problems := tracking_problems(parsed.tracking.uri):
            raise UserError(problems)
        outcome = run_sweep(parsed, storage, SweepTracking.of(parsed, spec, set_ or []), address=address, console=console)
    except UserError as exc:
        _fail(exc)
    except KeyboardInterrupt:  # a second Ctrl-C (or one before the trials start)
        err_console.print("interrupted: stopped at once; what finished is kept. Run the same command to resume.",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(INTERRUPTED_EXIT + signal.SIGINT)
    except OSError as exc:  # before the trials (pre-flight's cache, the sweep's run): nothing is lost yet
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        err_console.print(f"[bold red]stopped:[/] {exc}. Free space (or mend the file system) and run the "
                          "same command again.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    _print_outcome(parsed, outcome)
    if outcome.stopped is not None:
        err_console.print(f"[bold red]stopped:[/] {len(outcome.records)}/{len(outcome.plan.trials)} trials finished "
                          f"(their records are kept under {storage}/trials), because {outcome.stopped}. Mend the "
                          "cause and run the same command to resume.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if outcome.interrupted is not None:
        err_console.print(f"interrupted: {len(outcome.records)}/{len(outcome.plan.trials)} trials finished; "
                          "run the same command to resume", highlight=False, soft_wrap=True)
        raise typer.Exit(INTERRUPTED_EXIT + outcome.interrupted)  # 130 for SIGINT, 143 for SIGTERM
    if outcome.failed:
        raise typer.Exit(1)


@app.command("gc", cls=_Command)
def collect_garbage(storage: StorageOpt = DEFAULT_STORAGE, dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="list what would be removed, remove nothing")] = False) -> None:
    """Remove from the storage what no sweep on it refers to: stages, checkpoints, cache entries, Tune state."""
    from fairsweep.sweep.gc import find_garbage, no_sweep_running, remove

    if not storage.is_dir():
        _fail(UserError(errors.STORAGE_NOT_USABLE.format(path=storage, reason=f"{storage} is not a directory")))
    with no_sweep_running(storage) as alone:
        if not alone and not dry_run:
            _fail(UserError(errors.SWEEP_RUNNING.format(path=storage)))
        garbage = find_garbage(storage)
        table = Table("what", "count", "MiB")
        for category, paths in garbage.paths.items():
            table.add_row(category, str(len(paths)), f"{garbage.bytes(category) / 2**20:.1f}")
        if dry_run:
            for category, paths in garbage.paths.items():
                for path in paths:
                    console.print(f"{category}: {path}", highlight=False, soft_wrap=True)
        console.print(table)
        if not garbage.total:
            console.print("nothing to remove: every stage, checkpoint and cache entry is referred to", highlight=False)
        elif dry_run:
            console.print(f"{garbage.total} item(s) would be removed (dry run: nothing removed)", highlight=False)
        else:
            remove(garbage)
            console.print(f"removed {garbage.total} item(s); trial records are kept", highlight=False)
