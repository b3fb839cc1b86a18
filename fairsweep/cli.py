"""The `fairsweep` command. Heavy libraries load inside the commands that need them."""

from __future__ import annotations

import errno
import gc
import math
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from fairsweep import errors
from fairsweep.errors import USER_ERROR_EXIT, UserError

INTERRUPTED_EXIT = 128  # + the signal's number, as a shell reports a process a signal ended

class _PlainHelp:
    """Help that shows what to write, not Python types: nothing beside a flag (typer would print `<bool>`),
    the name in capitals for a value (`--reference REFERENCE`, `SPEC`; typer: `<str>`, `{spec}`) unless
    the option names its own (`--set KEY=VALUE`)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if param.metavar is None:
                param.metavar = "" if getattr(param, "is_flag", False) else param.name.upper()
        return params


class _Group(_PlainHelp, TyperGroup):
    pass


class _Command(_PlainHelp, TyperCommand):
    pass


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, cls=_Group,
                  help="Reproducible sweeps on the fairness cost of ReLU linearization.")
console = Console()
if not console.is_terminal:  # logs and CI: wide enough that the results table does not wrap
    console = Console(width=200)
err_console = Console(stderr=True)


@app.callback(invoke_without_command=True)
def _top(ctx: typer.Context, version: Annotated[bool, typer.Option(
        "--version", is_eager=True, help="print fairsweep's version and exit")] = False) -> None:
    if version:
        from fairsweep import __version__

        console.print(f"fairsweep {__version__}", highlight=False)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:  # bare `fairsweep`: its help, and no error
        console.print(ctx.get_help(), highlight=False)
        raise typer.Exit()


SpecArg = Annotated[Path, typer.Argument(help="the sweep spec (YAML), e.g. sweeps/mu_ablation.yaml")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="override a spec key: --set finetune.epochs=5; a list sets its grid: --set finetune.mu=[0,0.01]")]
StorageOpt = Annotated[Path, typer.Option(metavar="DIR", help="where stages, trial records and Tune state live")]
VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", help="show Ray's, Ray Tune's and MLflow's own output (hidden by default) and the trials' own lines")]
TargetArg = Annotated[str, typer.Argument(help="a sweep spec (YAML), or the name of an MLflow experiment (its latest sweep)")]
TrackingUriOpt = Annotated[str, typer.Option(metavar="URI", help="the MLflow store of an experiment NAME")]


def _set_verbose(on: bool) -> None:
    """Before Ray or MLflow is imported; the trials' workers inherit it."""
    if on:
        from fairsweep.sweep.ray_session import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"


DEFAULT_STORAGE = Path("fairsweep-runs")


def _fail(exc: UserError) -> None:
    for problem in exc.problems:
        err_console.print(f"[bold red]error:[/] {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(USER_ERROR_EXIT)


@app.command(cls=_Command)
def validate(spec: SpecArg, set_: SetOpt = None, storage: StorageOpt = DEFAULT_STORAGE) -> None:
    """Check a spec without running it and print the plan: trials and unique stages of each kind."""
    from fairsweep.spec import load_spec
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
        outcome = run_sweep(parsed, storage, SweepTracking.of(parsed, spec), address=address, console=console)
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


@app.command(cls=_Command)
def datasets(root: Annotated[Optional[Path], typer.Option(
        envvar="FAIRSWEEP_DATA", metavar="DIR", help="the data root to look in (default: $FAIRSWEEP_DATA)")] = None) -> None:
    """List the datasets, their target and group attributes, and whether each is found under the root."""
    from fairsweep.data import dataset_info, list_datasets
    from fairsweep.spec import DataConfig

    table = Table("dataset", "targets", "groups", "status", "description")
    for name in list_datasets():
        info = dataset_info(name)
        if info.embedded:
            status = "embedded"
        elif root is None:
            status = "no root given"
        else:
            found = info.files.found(root.expanduser(), DataConfig(dataset=name))
            status = f"found: {found}" if found else (f"not found under {root}: expects {info.files.what} in "
                                                      f"{info.files.where()}")
        table.add_row(name, ", ".join(info.targets), ", ".join(info.groups), status, info.description)
    console.print(table)
    if root is None:
        console.print("Give a data root with --root DIR or the environment variable FAIRSWEEP_DATA.")


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


@app.command(cls=_Command)
def relus(
    arch: Annotated[str, typer.Argument(help="a registered architecture, e.g. resnet18")],
    input_size: Annotated[int, typer.Option(min=1, help="height and width of the input")] = 32,
    in_channels: Annotated[int, typer.Option(min=1, help="channels of the input")] = 3,
    num_classes: Annotated[int, typer.Option(min=1, help="classifier outputs")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help='print {"total", "stages", "sites"} as JSON')] = False,
    stem_relu: Annotated[Optional[bool], typer.Option(
        "--stem-relu/--no-stem-relu", help="--no-stem-relu: no ReLU after the stem, as the SNL authors' ResNet "
                                           "(resnet18, resnet34 only); default: the architecture's own",
        show_default=False)] = None,
) -> None:
    """ReLU accounting of an architecture: the total, per stage and per site, at one input size."""
    import json

    import torch

    from fairsweep.errors import ARCH_INPUT, unknown_name
    from fairsweep.linearize import count_relus
    from fairsweep.models import create_model, input_problem, list_models, relu_sites, stem_relu_problem

    shape = (in_channels, input_size, input_size)
    options = {} if stem_relu is None else {"stem_relu": stem_relu}
    try:
        if arch not in list_models():
            raise UserError(unknown_name("architecture", arch, list_models()))
        problem = None if stem_relu is None else stem_relu_problem(
            arch, "--stem-relu" if stem_relu else "--no-stem-relu", "given")
        if problem is not None:
            raise UserError(problem)
        problem = input_problem(arch, shape, **options)
        if problem is not None:
            raise UserError(ARCH_INPUT.format(arch=arch, shape="×".join(map(str, shape)), reason=problem))
    except UserError as exc:
        _fail(exc)
    with torch.device("meta"):  # shapes only: counting needs no compute
        model = create_model(arch, num_classes=num_classes, in_channels=in_channels, **options)
    count = count_relus(model, shape)
    if as_json:
        typer.echo(json.dumps({"total": count.total, "stages": count.stages, "sites": count.sites}, indent=1))
        return
    console.print(f"[bold]{arch}[/] at {'×'.join(map(str, shape))}: [bold]{count.total:,}[/] ReLUs", highlight=False)
    stages = Table("stage", "ReLUs", "share")
    for stage, units in count.stages.items():
        stages.add_row(stage, f"{units:,}", f"{units / count.total:.1%}")
    console.print(stages)
    sites = Table("site", "units (C×H×W)", "ReLUs")
    for name, site in relu_sites(model).items():
        sites.add_row(name, "×".join(map(str, site.unit_shape)), f"{count.sites[name]:,}")
    console.print(sites)


@app.command(cls=_Command)
def pareto(
    target: TargetArg,
    set_: SetOpt = None,
    objective: Annotated[Optional[list[str]], typer.Option(
        metavar="METRIC:max|min", help="METRIC:max or METRIC:min, repeatable; default: the spec's sweep.search.objectives, for a grid "
             "acc:max drop_gap_pct:min relu_count:min")] = None,
    fmt: Annotated[str, typer.Option("--format", metavar="table|csv|json", help="how to print the front")] = "table",
    reference: Annotated[Optional[str], typer.Option(
        metavar="NUMBERS", help="the hypervolume's reference point, one number per objective: 0.5,40,500; default: each "
             "objective's worst value, 10 % of its range further")] = None,
    x: Annotated[Optional[str], typer.Option(metavar="METRIC", help="the plot's x axis (an objective; default the first)")] = None,
    y: Annotated[Optional[str], typer.Option(metavar="METRIC", help="the plot's y axis (default the second objective)")] = None,
    color: Annotated[Optional[str], typer.Option(metavar="METRIC", help="the plot's colour (default the third objective)")] = None,
    plot: Annotated[Optional[Path], typer.Option(metavar="FILE", help="where to save the plot (default ./NAME-pareto.png)")] = None,
    tracking_uri: TrackingUriOpt = "sqlite:///mlflow.db",
) -> None:
    """The non-dominated trials of a sweep after seed averaging, their hypervolume and a plot.

    All three are logged to the sweep's MLflow run."""
    import json

    from fairsweep.errors import unknown_name
    from fairsweep.sweep.pareto import choose_objectives, parse_reference, pareto_front, plot_front
    from fairsweep.tracking import sweep_runs

    try:
        if fmt not in ("table", "csv", "json"):
            raise UserError(unknown_name("format", fmt, ["table", "csv", "json"]))
        sweep = sweep_runs(target, set_ or [], tracking_uri)
        objectives = choose_objectives(sweep.spec, objective or [])
        names = list(objectives)
        axes = {"x": x or names[0], "y": y or names[1], "color": color or (names[2] if len(names) > 2 else None)}
        for axis, metric in axes.items():
            if metric is not None and metric not in objectives:
                raise UserError(f"`--{axis}`: " + unknown_name("objective", metric, names))
        front = pareto_front(sweep.runs, [k for k in sweep.spec.sweep.varied_keys if k != "seed"], objectives,
                             parse_reference(reference, objectives))
    except UserError as exc:
        _fail(exc)
    name = sweep.spec.name
    numbered = front.numbered()
    points = int(numbered["point"].max()) if len(numbered) else 0
    path = plot_front(front, axes["x"], axes["y"], axes["color"], plot or Path(f"{name}-pareto.png"),
                      f"{name}: {_count(points, 'non-dominated point')} ({_count(len(numbered), 'configuration')}) "
                      f"of {len(front.table)}")
    rows = numbered.assign(run_ids=numbered["run_ids"].map(" ".join))
    reference_text = ", ".join(f"{m}={v:.6g}" for m, v in zip(names, front.reference))
    summary = {"objectives": objectives, "reference": dict(zip(names, front.reference.tolist())),
               "hypervolume": front.hypervolume, "configurations": len(front.table), "sweep_run_id": sweep.parent_run_id,
               "plot": str(path.resolve())}
    sweep.tracker.log_front(sweep.parent_run_id, front.hypervolume, rows.to_csv(index=False), summary, path)
    if fmt == "json":
        summary["front"] = json.loads(numbered.to_json(orient="records", double_precision=15))
        typer.echo(json.dumps(summary, indent=1))
        return
    if fmt == "csv":
        typer.echo(rows.to_csv(index=False), nl=False)
        err_console.print(f"hypervolume {front.hypervolume:.6g} (reference {reference_text})", highlight=False)
        return
    view = Table("point", *front.config_keys, *(f"{m} ({d})" for m, d in objectives.items()), "seeds",
                 title=f"{name}: Pareto front, {_count(points, 'point')} ({len(rows)} of {len(front.table)} "
                       "configurations; seed means)")
    view.add_column("MLflow runs", overflow="fold")  # whole ids (wrapped where narrow), never cut short
    for point, tied in rows.groupby("point", sort=True):  # tied configurations: one row, a line each
        view.add_row(str(point), *("\n".join(_short(v) for v in tied[k]) for k in front.config_keys),
                     *(f"{tied[m].iloc[0]:.4g}" for m in names), "\n".join(str(n) for n in tied["seeds"]),
                     "\n".join(tied["run_ids"]))
    console.print(view)
    console.print(f"hypervolume {front.hypervolume:.6g} (reference {reference_text})\nplot: {path}\n"
                  f"logged to MLflow run {sweep.parent_run_id} (pareto_hypervolume, pareto/)", highlight=False,
                  soft_wrap=True)


@app.command(cls=_Command)
def report(target: TargetArg, set_: SetOpt = None, tracking_uri: TrackingUriOpt = "sqlite:///mlflow.db", out: Annotated[
        Optional[Path], typer.Option(metavar="DIR", help="where to write it (default ./NAME-report/)")] = None) -> None:
    """The paper's figures of a sweep (mean ± std over seeds) and their tables: PNGs, one HTML page, logged to MLflow."""
    from fairsweep.report import report_sweep  # matplotlib and pandas load only here

    report_sweep(target, set_ or [], out, tracking_uri, console, fail=_fail)


def _count(n: int, noun: str) -> str:
    """`1 point`, `2 points`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _short(value) -> str:
    """A configuration value for a table: numbers to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_outcome(spec, outcome) -> None:
    from fairsweep.sweep.results import TABLE_METRICS, records_frame, results_table

    keys = spec.sweep.varied_keys
    table = results_table(records_frame(outcome.records.values(), keys), keys)
    if table is not None:
        metrics = [m for m in TABLE_METRICS if f"{m}_mean" in table.columns]
        keys = [c for c in table.columns if not any(c.startswith(m + "_") for m in metrics)]
        title, table = _screenful(table, spec.name, outcome.table_path)
        view = Table(title=title)
        for header in (*keys, *metrics, "seeds"):  # a narrow terminal wraps a header, never cuts it short
            view.add_column(header, overflow="fold")
        show = _short if spec.sweep.search is not None else str  # searched values are long floats
        for _, row in table.iterrows():
            cells = [show(row[k]) for k in keys]
            for m in metrics:
                digits = 0 if m == "relu_count" else 2 if m.endswith("_pct") else 4
                cells.append(_mean_std(row[f"{m}_mean"], row[f"{m}_std"], digits))
            cells.append(str(int(row[f"{metrics[0]}_count"])))
            view.add_row(*cells)
        console.print(view)
    unique = {k: len(outcome.plan.unique_stages(k)) for k in outcome.trained}
    trained = ", ".join(f"{k} {outcome.trained[k]}/{unique[k]}" for k in outcome.trained)
    console.print(f"{len(outcome.records)}/{len(outcome.plan.trials)} trials finished "
                  f"({outcome.skipped} from earlier runs) in {outcome.seconds:.0f}s; "
                  f"stages trained now (of unique): {trained}; "
                  f"trials waited {outcome.lock_wait:.1f}s in all for stages other trials were training",
                  highlight=False)
    if outcome.failed:
        console.print(f"[bold red]{len(outcome.failed)} trial(s) failed:[/]")
        for name, error in outcome.failed_names().items():
            console.print(f"  {name}: {error}", highlight=False, soft_wrap=True)
    from fairsweep.tracking import runs_url

    uri = spec.tracking.uri  # a store that gave out (the sweep stopped) is not asked for the link
    url = runs_url(uri, spec.experiment, outcome.parent_run_id) if outcome.stopped is None else None
    console.print(f"MLflow: experiment '{spec.experiment}', sweep run {outcome.parent_run_id}. View it with:\n"
                  f"  mlflow ui --backend-store-uri {uri}" + (f"\n  and open its trial runs at {url}" if url else ""),
                  highlight=False, soft_wrap=True)


SCREEN_ROWS = 30  # a longer results table is summarised: its best and worst rows, and where the whole is


def _screenful(table, name: str, path):
    """The table's title and rows to print: all of them, or for a long table the `SCREEN_ROWS / 2` with the
    highest and the lowest worst-group accuracy, said so in the title with where the whole table is."""
    title = f"{name}: mean ± std over seeds"
    if len(table) <= SCREEN_ROWS:
        return title, table
    rank = "worst_group_acc_mean" if "worst_group_acc_mean" in table else "acc_mean"
    ordered = table.sort_values(rank, ascending=False, kind="stable")
    half = SCREEN_ROWS // 2
    import pandas as pd

    shown = pd.concat([ordered.head(half), ordered.tail(half)])
    whole = f"{path} (and results.csv in the sweep's MLflow run)" if path else "results.csv in the sweep's MLflow run"
    return (f"{title}: the {half} rows with the highest and the {half} with the lowest {rank.removesuffix('_mean')} "
            f"of {len(table):,}; the whole table is {whole}"), shown


def _mean_std(mean: float, std: float, digits: int) -> str:
    """`mean ± std` to `digits` decimals; `—` for no value; never `-0.00`."""
    if math.isnan(mean):
        return "—"
    text = f"{mean + 0.0:.{digits}f}".replace("-0." + "0" * digits, "0." + "0" * digits) if digits else f"{mean:.0f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def main() -> None:
    try:
        app()
    except UserError as exc:  # raised outside a command's own handling
        for problem in exc.problems:
            err_console.print(f"error: {problem}", highlight=False, soft_wrap=True)
        sys.exit(USER_ERROR_EXIT)
    finally:
        # The command is done: spare the interpreter's exit its last garbage collection over the millions
        # of objects torch, Ray and MLflow leave (1.7 s of the 2.0 s a `fairsweep run` took to exit here).
        # atexit handlers still run, acyclic objects are still freed as the modules are torn down; the
        # operating system reclaims the rest.
        gc.freeze()


if __name__ == "__main__":
    main()
