"""What a storage holds that no sweep on it refers to, and removing it (`fairsweep gc`).

A sweep refers to the stages of its plan's trials: the driver writes them, with the data-cache
entries its pre-flight read or wrote, to `<storage>/sweeps/<spec hash>.json` when it starts (and
again at the end, for a search's trials). Every trial record on the storage refers to its stages
too, and a base model's `diagnose` stage goes with its base stage. The rest is garbage:

- stages referred to by no sweep and no record (a spec changed after a failed trial, an older
  fairsweep's stage format);
- epoch checkpoints of stages that are stored or that nothing refers to;
- data-cache entries no sweep's pre-flight touched (recomputed, cheaply, if ever needed again);
- Ray Tune's experiment directories (`tune/`): fairsweep never resumes one, a re-run starts anew;
- leftovers: `tmp/` (a killed writer's half stage), lock files of removed stages, `damaged/` (what
  was moved aside as unreadable, kept until now for a look).

Trial records are never removed: they are the results. A running sweep holds the storage's sweep
lock shared (`locks/sweeps.lock`); `gc` takes it exclusively and refuses while one runs, so it
never removes what a running sweep is about to load.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fairsweep.files import file_lock, write_json_atomic

MANIFESTS = "sweeps"
SWEEP_LOCK = Path("locks") / "sweeps.lock"


def write_manifest(storage: Path, spec_hash: str, name: str, plan, data_entries: set[str]) -> None:
    """Record what the sweep of `spec_hash` refers to: its plan's stages and the data-cache entries it touched
    (merged with what an earlier run of the same spec recorded: a search's trials accumulate)."""
    path = Path(storage) / MANIFESTS / f"{spec_hash}.json"
    stages = {s.id for t in plan.trials for s in (*t.stages.values(), t.base_diagnostics)}
    entries = set(data_entries)
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            stages |= set(old.get("stages", []))
            entries |= set(old.get("data_cache", []))
        except (OSError, ValueError):  # unreadable: rewritten whole below
            pass
    write_json_atomic(path, {"name": name, "spec_hash": spec_hash, "stages": sorted(stages),
                             "data_cache": sorted(entries)})


def sweep_running(storage: Path):
    """Held by a running sweep (shared: sweeps run side by side): gc does not run meanwhile."""
    return file_lock(Path(storage) / SWEEP_LOCK, shared=True)


@contextmanager
def no_sweep_running(storage: Path) -> Iterator[bool]:
    """True (holding the sweep lock exclusively) if no sweep runs on `storage`, else False."""
    path = Path(storage) / SWEEP_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Garbage:
    """What gc would remove, by category: paths and their bytes."""

    paths: dict[str, list[Path]] = field(default_factory=dict)

    def add(self, category: str, path: Path) -> None:
        self.paths.setdefault(category, []).append(path)

    def bytes(self, category: str) -> int:
        return sum(_size(p) for p in self.paths.get(category, []))

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.paths.values())


def referenced(storage: Path) -> tuple[set[str], set[str]]:
    """The stage ids and data-cache entry names that some sweep or trial record on `storage` refers to."""
    stages: set[str] = set()
    entries: set[str] = set()
    for path in sorted((storage / MANIFESTS).glob("*.json")):
        content = json.loads(path.read_text())
        stages |= set(content.get("stages", []))
        entries |= set(content.get("data_cache", []))
    for path in sorted((storage / "trials").glob("*.json")):
        try:
            stages |= set(json.loads(path.read_text()).get("stages", {}).values())
        except (OSError, ValueError, AttributeError):  # a damaged record: read (and moved aside) by the next run
            continue
    return stages, entries


def find_garbage(storage: str | Path) -> Garbage:
    storage = Path(storage).expanduser().resolve()
    keep, entries = referenced(storage)
    garbage = Garbage()
    stored: set[str] = set()
    for kind_dir in sorted((storage / "stages").glob("*")):
        for stage_dir in sorted(kind_dir.glob("*")):
            if stage_dir.name in keep or (kind_dir.name == "diagnose" and _parent(stage_dir) in keep):
                stored.add(stage_dir.name)
            else:
                garbage.add("stages", stage_dir)
    for checkpoint in sorted((storage / "checkpoints").glob("*.pt")):
        if checkpoint.stem in stored or checkpoint.stem not in keep:
            garbage.add("checkpoints", checkpoint)
    for entry in sorted((storage / "data-cache").glob("*.pt")):
        if entry.name not in entries:
            garbage.add("data-cache", entry)
    for experiment in sorted((storage / "tune").glob("*")):
        garbage.add("tune", experiment)
    for leftover in (*sorted((storage / "tmp").glob("*")), *sorted((storage / "damaged").glob("*"))):
        garbage.add("leftovers", leftover)
    removed = {p.name for p in garbage.paths.get("stages", [])}
    for lock in sorted((storage / "locks").glob("*.lock")):
        if lock.stem in removed:
            garbage.add("leftovers", lock)
    return garbage


def remove(garbage: Garbage) -> None:
    for paths in garbage.paths.values():
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _parent(stage_dir: Path) -> str | None:
    try:
        return json.loads((stage_dir / "stage.json").read_text()).get("parent")
    except (OSError, ValueError, AttributeError):
        return None


def _size(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())


def describe(storage: Path) -> str:
    """The storage's size on disk, for the summary line."""
    return f"{_size(Path(storage)) / 2**20:.1f} MiB" if os.path.isdir(storage) else "0 MiB"
