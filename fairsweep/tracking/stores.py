"""Tracking URIs: a relative SQLite store made absolute, and what would make logging fail, checked before
any training."""

from __future__ import annotations

from pathlib import Path

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
    from urllib.parse import urlparse

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
