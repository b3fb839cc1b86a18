"""The commands that look at what exists: `datasets`, `relus`, `pareto`, `report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from fairsweep.errors import UserError

from fairsweep.cli.app import (DEFAULT_STORAGE, SetOpt, StorageOpt, TargetArg, TrackingUriOpt, _Command, _fail, app,
                               console, err_console)
from fairsweep.cli.output import _count, _short


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
    register: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="register the front's final models in MLflow's Model Registry as versions of NAME "
             "(each run once; models not yet logged are logged from the storage)")] = None,
    storage: StorageOpt = DEFAULT_STORAGE,
) -> None:
    """The non-dominated trials of a sweep after seed averaging, their hypervolume and a plot.

    All three are logged to the sweep's MLflow run."""

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
    if register is not None:
        _register(sweep, front, register, storage)
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


def _register(sweep, front, name: str, storage: Path) -> None:
    """`pareto --register NAME`: the front's final models as versions of NAME, and what became of each, on stderr
    (stdout holds the front, in the format asked)."""
    from fairsweep.tracking.sweep import register_front

    registered, kept, missing = register_front(sweep, front, name, storage)
    err_console.print(f"registered model {name}: {_count(len(registered), 'version')} added, "
                      f"{len(kept)} of the front's runs registered before", highlight=False, soft_wrap=True)
    if missing:
        err_console.print(f"not registered, no model logged and none in {storage}: {', '.join(missing)}",
                          highlight=False, soft_wrap=True)


@app.command(cls=_Command)
def report(target: TargetArg, set_: SetOpt = None, tracking_uri: TrackingUriOpt = "sqlite:///mlflow.db", out: Annotated[
        Optional[Path], typer.Option(metavar="DIR", help="where to write it (default ./NAME-report/)")] = None) -> None:
    """The paper's figures of a sweep (mean ± std over seeds) and their tables: PNGs, one HTML page, logged to MLflow."""
    from fairsweep.report import report_sweep  # matplotlib and pandas load only here

    try:
        report_sweep(target, set_ or [], out, tracking_uri, console)
    except UserError as exc:
        _fail(exc)
