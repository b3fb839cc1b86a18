"""The report's one self-contained HTML page: the figures inlined as PNG, each with the table of the
numbers it shows, the figures left out and why."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field

import pandas as pd

STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4}img{max-width:100%}figcaption{font-size:.9em;color:#444;max-width:70em}
.meta td,.meta th{text-align:left}.left-out{color:#833}details{margin:.5em 0}summary{cursor:pointer}"""


@dataclass
class Section:
    """One figure of the report: its file name, title, caption, PNG bytes and tables (name -> frame)."""

    name: str
    title: str
    caption: str
    png: bytes | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    left_out: str | None = None  # why the figure is not there


def digits(metric: str) -> str:
    """How a metric's numbers are shown: accuracies to 4 decimals, percents to 2, counts whole, else 4 figures."""
    if metric.endswith("_pct"):
        return ".2f"
    if "acc" in metric or metric in ("relu_fraction", "bound_holds"):
        return ".4f"
    if metric in ("relu_count", "seeds") or metric.endswith("_size"):
        return ".0f"
    return ".4g"


def mean_std(mean: float, std: float, spec: str) -> str:
    """`mean ± std` as the report shows it; `—` for no value; the std left out for one seed; never `-0.00`."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{mean:{spec}}"
    if text.startswith("-") and not text.strip("-0."):  # -0.00: a negative that rounds to zero
        text = text[1:]
    return text if std is None or math.isnan(std) else f"{text} ± {std:{spec}}"


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """A table of `<m>_mean`, `<m>_std`, `<m>_count` columns as the page shows it: one `m` column of
    `mean ± std` each and one `seeds` column (the most seeds of any metric in the row); keys as they are."""
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    out = pd.DataFrame(index=table.index)
    counts = [f"{m}_count" for m in metrics if f"{m}_count" in table]
    for column in table.columns:
        if column.endswith(("_mean", "_std", "_count")) and column.rsplit("_", 1)[0] in metrics:
            if column.endswith("_mean"):
                metric = column[: -len("_mean")]
                spread = table.get(f"{metric}_std", pd.Series(math.nan, table.index))
                if metric.endswith("_size"):  # a split's samples: the same for every seed but where splits differ
                    spread = spread.where(spread > 0)
                out[metric] = [mean_std(m, s, digits(metric)) for m, s in zip(table[column], spread)]
            continue
        values = table[column]
        if pd.api.types.is_float_dtype(values):  # keys (`linearize.budget`) as written; other numbers to 4 figures
            spec = "g" if "." in column else ".6g" if column == "hypervolume" else ".4g"
            out[column] = [mean_std(v, math.nan, spec) for v in values]
        else:
            out[column] = ["—" if pd.isna(v) else str(v) for v in values]
    if counts:
        out["seeds"] = table[counts].max(axis=1).map(lambda n: "—" if pd.isna(n) else f"{n:.0f}")
    return out


def _table(frame: pd.DataFrame, name: str) -> str:
    return shown(frame).to_html(index=False, border=0, classes=f"numbers {name}", na_rep="—")


def render(title: str, meta: list[tuple[str, str]], sections: list[Section], results: pd.DataFrame | None) -> str:
    """The page: a header of what sweep it is, the results table, then each section in order."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>", "<table class='meta'>"]
    parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in meta]
    parts.append("</table>")
    left = [s for s in sections if s.left_out]
    if left:
        parts.append("<p class='left-out'>Left out: " + "; ".join(
            f"<a href='#{s.name}'>{html.escape(s.title)}</a>" for s in left) + " (below, why).</p>")
    if results is not None:
        parts.append("<h2 id='results'>Results: mean ± std over seeds</h2>" + _table(results, "results"))
    for section in sections:
        parts.append(f"<h2 id='{section.name}'>{html.escape(section.title)}</h2>")
        if section.left_out:
            parts.append(f"<p class='left-out'>Left out: {html.escape(section.left_out)}.</p>")
            continue
        image = base64.b64encode(section.png).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(section.title)}' src='data:image/png;base64,{image}'>"
                     f"<figcaption>{html.escape(section.caption)}</figcaption></figure>")
        parts += [f"<p class='note'>{html.escape(n)}.</p>" for n in section.notes]
        for name, table in section.tables.items():
            parts.append(f"<details open><summary>{html.escape(name)} ({len(table)} rows; "
                         f"tables/{html.escape(section.name)}-{html.escape(name)}.csv)</summary>"
                         + _table(table, f"{section.name}-{name}") + "</details>")
    parts.append("</body></html>")
    return "\n".join(parts)
