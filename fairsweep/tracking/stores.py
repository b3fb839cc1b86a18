"""Tracking URIs: a relative SQLite store made absolute, what would make logging fail (checked before any
training), and where the MLflow UI shows a sweep's runs."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

from fairsweep import errors
from fairsweep.errors import unwritable


def absolute_uri(uri: str) -> str:
    """A relative SQLite store (`sqlite:///mlflow.db`) made absolute against the working directory now.

    MLflow keeps one store per URI for the life of the process, so a relative one would otherwise stay
    bound to whichever directory it was first used in.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


def embedded_database(uri: str) -> Path | None:
    """The file of an embedded SQLite store (`sqlite:///mlflow.db`), absolute; None for any other store."""
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        return Path(absolute_uri(uri)[len("sqlite:///"):])
    return None


def tracking_problems(uri: str, timeout: float = 3.0) -> list[str]:
    """What would make logging to `uri` fail, found in a few seconds before any training: a tracking
    server that does not answer, a SQLite database in a directory that cannot be written."""
    import socket

    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout=timeout).close()
        except OSError as exc:
            reason = f"nothing answers at {parsed.hostname}:{port} ({exc.strerror or exc})"
            return [errors.TRACKING_UNREACHABLE.format(uri=uri, reason=reason, port=port)]
    elif (database := embedded_database(uri)) is not None:
        if database.is_dir():
            return [errors.TRACKING_NOT_WRITABLE.format(uri=uri, reason=f"{database} is a directory")]
        if reason := unwritable(database.parent):
            return [errors.TRACKING_NOT_WRITABLE.format(uri=uri, reason=reason)]
    return []


def experiment_names(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [exp.name for exp in MlflowClient(absolute_uri(uri)).search_experiments()]


UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves an embedded store by default
# An experiment tag `mlflow.sharedViewState.<key>` holds a view of its runs (JSON: a filter, the visible
# columns), which the UI opens at `…/runs?viewStateShareKey=<key>`: how its Share button shares one. The
# UI's URL itself chooses no columns.
VIEW_STATE_TAG = "mlflow.sharedViewState."
VIEW_METRICS = ("acc", "worst_group_acc", "drop_gap_pct")  # the columns of a sweep's view, beside its varied keys


def sweep_view(parent_run_id: str, varied_keys: list[str]) -> dict:
    """The UI's view of a sweep's trial runs: those of its sweep run, in the order of their names (µ, then
    the budget, ...: `Trial.run_name`), with the varied keys and `VIEW_METRICS` as columns besides the UI's
    own (source, version: the git commit, models, dataset). Its share key is the sweep run's id. Ordered by
    anything but the start time, the UI lists them as they are, not folded under their sweep run."""
    columns = ["attributes.`Source`", "attributes.`Version`", "attributes.`Models`", "attributes.`Dataset`",
               *(f"params.`{key}`" for key in varied_keys), *(f"metrics.`{m}`" for m in VIEW_METRICS)]
    return {"searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'", "orderByKey": "tags.`mlflow.runName`",
            "orderByAsc": True, "selectedColumns": columns}


def ui_address(uri: str) -> str:
    """Where the MLflow UI of the store at `uri` is: a tracking server's own address, else `mlflow ui`'s default."""
    return uri.rstrip("/") if urlparse(uri).scheme in ("http", "https") else UI_ADDRESS


def runs_url(uri: str, experiment: str, parent_run_id: str) -> str | None:
    """The address of a sweep's trial runs in the UI's model-training view, as `sweep_view` shows them (if the
    experiment holds that view). None if the experiment cannot be found now (the store gave out): the link
    is a convenience, never a failure."""
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient(absolute_uri(uri)).get_experiment_by_name(experiment)
    except Exception:  # whatever the store raises; the sweep's own outcome has been said already
        return None
    if found is None:
        return None
    view = f"&viewStateShareKey={parent_run_id}" if f"{VIEW_STATE_TAG}{parent_run_id}" in found.tags else ""
    return f"{ui_address(uri)}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning{view}"


def view_state_tag(parent_run_id: str, varied_keys: list[str]) -> tuple[str, str]:
    """The experiment tag (key, JSON value) that holds a sweep's `sweep_view`."""
    return f"{VIEW_STATE_TAG}{parent_run_id}", json.dumps(sweep_view(parent_run_id, varied_keys))
