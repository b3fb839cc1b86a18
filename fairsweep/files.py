"""Writing files so that readers never see half of one, even after a power loss; moving aside what cannot
be read; locking across processes; SQLite stores that readers cannot lock."""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fairsweep.errors import DAMAGED_FILE, DamagedFileWarning


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a temporary file beside `path`, then rename it over `path` (atomic), durably: the
    file's bytes reach the disk before the rename, and the rename before this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        fsync(tmp)  # without it, a power loss can leave the new name on a file of zeros or of half its bytes
        os.replace(tmp, path)
        fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, content: Any) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(content, indent=1)))


def write_synced(path: Path, data: bytes) -> None:
    """`data` into `path`, on the disk when this returns (for files of a folder that is renamed into place)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries (a rename in it), to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def move_aside(path: Path, root: Path, reason: str) -> Path | None:
    """Move `path` (a file or folder under `root` that cannot be read) to `root/damaged/`, at its place
    relative to `root` and stamped with the time, so that it is computed again while what was there is kept
    to look at; a warning names both places and `reason`. None if it was gone (another process moved it)."""
    relative = path.relative_to(root)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    moved = root / "damaged" / relative.parent / f"{relative.name}.{stamp}"
    moved.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(path, moved)
    except FileNotFoundError:
        return None
    warnings.warn(DAMAGED_FILE.format(path=path, reason=reason, moved=moved), DamagedFileWarning, stacklevel=2)
    return moved


def unreadable(error: BaseException) -> str:
    """Why a file could not be read, in a few words (a truncated zip's error is one long line)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


@contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """An exclusive lock (shared: one of many holders') held while in the block; it dies with its process,
    so it is never left stale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


SQLITE_TIMEOUT_S = 30.0  # how long a write to an embedded store waits for another writer (SQLite's busy timeout)


def sqlite_wal(database: Path) -> str | None:
    """Put the SQLite database at `database` (created if missing) in WAL journal mode, which the file keeps:
    a reader then never blocks its writer, however long it holds a read transaction (`mlflow ui`,
    `optuna-dashboard`, a database browser), nor the writer a reader. The journal mode the database is in;
    None if it could not be asked (a writer holding the database for longer than the busy timeout, say), in
    which case nothing changes and nothing fails: the sweep writes as before, waiting for readers."""
    import sqlite3
    from contextlib import closing

    database.parent.mkdir(parents=True, exist_ok=True)
    try:
        with closing(sqlite3.connect(database, timeout=SQLITE_TIMEOUT_S)) as db:
            return db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error:
        return None


def sqlite_checkpoint(database: Path) -> None:
    """Move what the WAL of the SQLite database at `database` holds into the database file (the `-wal` file
    left empty), so that the file alone is whole: a sweep's process keeps its connections open to its end,
    so SQLite never does it on closing them. Nothing fails for it; a reader in the way leaves the WAL as it
    is (whoever opens the database next reads it)."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(database, timeout=SQLITE_TIMEOUT_S)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error:
        pass
