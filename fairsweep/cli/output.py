"""What `fairsweep run` prints at its end: the results table (a screenful of a long one), the counts, the links."""

from __future__ import annotations

import math

from rich.table import Table


from fairsweep.cli.app import console


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
