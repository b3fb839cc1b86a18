"""The decode cache: a dataset's files read once into uint8 tensors, reused by every trial and sweep.

It lives beside the stage store (`<storage>/data-cache/`), so the trials' Ray workers find it
through the storage path they already get. An entry is one file, `<dataset>-<fingerprint>.pt`,
written atomically under a lock (concurrent trials decode a dataset once between them) and read
with `torch.load(weights_only=True)`.

The fingerprint hashes the preprocessing (e.g. the resize) and, for every source file, its path
relative to the dataset's directory, its size and its modification time in nanoseconds — not its
bytes. Hashing the bytes would cost a full read of the dataset (UTKFace: 23,000 files; SVHN:
600 MB) on every load, which is what the cache exists to avoid; any rewrite of a file (an edit,
a fresh download or extraction, a copy without preserved times) changes its size or mtime.
Moving the whole dataset keeps its fingerprint, since paths are relative. An edit made to keep
size and mtime unchanged would go unnoticed: delete `<storage>/data-cache/` after such surgery.

An entry that cannot be read (cut short by a power loss before writes were fsynced, a disk's fault) is
moved to `<storage>/damaged/data-cache/`, with a warning naming it, and decoded again.

The same directory memoizes what is computed from data rather than decoded from files (`memo`):
the embedded `digits` array and each seed's stratified split, keyed by hashes of their inputs.
The driver computes them while it checks the plan, so the trials' workers read them instead of
importing scikit-learn (2 s per process on this machine).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fairsweep.files import file_lock, move_aside, unreadable, write_atomic

CACHE_FORMAT = 1  # bump when a decoder changes what it stores
Decoded = dict[str, Any]  # tensors, plus JSON-able values (names, counts)
# The entries this process read or wrote, by file name: the driver's pre-flight touches every entry its
# trials will read, and records them in the sweep's manifest, so that `fairsweep gc` keeps them.
TOUCHED: set[str] = set()


def fingerprint(dataset: str, folder: Path, files: list[Path], preprocessing: dict[str, Any]) -> str:
    """Identity of a decode: the dataset, its preprocessing and its source files' (path, size, mtime)."""
    stats = []
    for path in sorted(files):
        stat = path.stat()
        stats.append([os.path.relpath(path, folder), stat.st_size, stat.st_mtime_ns])
    content = {"dataset": dataset, "format": CACHE_FORMAT, "preprocessing": preprocessing, "files": stats}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:20]


class DataCache:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def path(self, dataset: str, key: str) -> Path:
        return self.root / f"{dataset}-{key}.pt"

    def get_or_decode(self, dataset: str, folder: Path, files: list[Path], preprocessing: dict[str, Any],
                      decode: Callable[[], Decoded]) -> Decoded:
        """The cached decode of `files` (under `folder`), or `decode()`'s, cached, if there is none yet."""
        return self._get_or_compute(self.path(dataset, fingerprint(dataset, folder, files, preprocessing)), decode)

    def memo(self, name: str, inputs: dict[str, Any], compute: Callable[[], Decoded]) -> Decoded:
        """`compute()`'s result, cached under a hash of `inputs` (JSON values, or bytes for array contents)."""
        digest = hashlib.sha256(f"{name}/{CACHE_FORMAT}".encode())
        for key in sorted(inputs):
            value = inputs[key]
            data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode()
            digest.update(f"/{key}:{len(data)}:".encode())
            digest.update(data)
        return self._get_or_compute(self.path(name, digest.hexdigest()[:20]), compute)

    def _get_or_compute(self, path: Path, compute: Callable[[], Decoded]) -> Decoded:
        TOUCHED.add(path.name)
        cached = self._read(path)
        if cached is not None:
            return cached
        with file_lock(self.root / "locks" / f"{path.stem}.lock"):
            cached = self._read(path, under_lock=True)
            if cached is not None:  # computed by another process while we waited
                return cached
            result = compute()
            import torch

            write_atomic(path, lambda tmp: torch.save(result, tmp))
            return result

    def _read(self, path: Path, under_lock: bool = False) -> Decoded | None:
        """The entry at `path`; None if there is none or it cannot be read. A damaged entry is moved aside
        only `under_lock` (the entry's), lest it be the whole one another process has just written."""
        import torch

        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated zip: RuntimeError, OSError (EINVAL), EOFError, UnpicklingError
            if under_lock:
                move_aside(path, self.root.parent, unreadable(exc))
            return None


def get_or_decode(cache: DataCache | None, dataset: str, folder: Path, files: list[Path],
                  preprocessing: dict[str, Any], decode: Callable[[], Decoded]) -> Decoded:
    """Through `cache` when there is one (a sweep's storage); straight from the files otherwise."""
    if cache is None:
        return decode()
    return cache.get_or_decode(dataset, folder, files, preprocessing, decode)
