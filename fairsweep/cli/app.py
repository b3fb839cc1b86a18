"""The command's frame: the typer app, its help style, the options commands share, how a mistake ends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

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
