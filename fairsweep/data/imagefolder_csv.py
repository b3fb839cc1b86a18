"""Your own images: a CSV with one row per image naming its file, its target and its group.

    file,target,group
    img/0001.png,cat,indoor

Column names and the CSV's path are `data.csv.*`; image paths are relative to the CSV's folder, and
must stay inside it (`..`, absolute paths and symlinks resolved) unless `data.csv.allow_outside`.
Classes and groups are the values found (sorted), or the lists `data.csv.classes` /
`data.csv.groups`, in which case any other value is an error naming its line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fairsweep import errors
from fairsweep.data import DataFiles, GroupedData, Loaded, locate, register_dataset
from fairsweep.data.cache import Decoded, get_or_decode
from fairsweep.data.readers import decode_images, reading
from fairsweep.errors import UserError

if TYPE_CHECKING:
    from fairsweep.data.cache import DataCache
    from fairsweep.spec import CsvConfig, DataConfig

NAME = "imagefolder_csv"
FILES = DataFiles(
    subdirs=("",),
    expected=lambda cfg: (cfg.csv.path,),
    what="a CSV (data.csv.path, default labels.csv) with file, target and group columns",
    published="your own machine: a CSV (data.csv.path) with file, target and group columns beside the images",
)
# ImageNet's per-channel mean and std: the usual choice for natural photographs.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Row:
    line: int  # in the CSV file, the header being line 1
    file: str
    target: str
    group: str


@register_dataset(
    NAME,
    description="your own images plus a CSV naming each image's file, target and group (data.csv)",
    targets=("target",),
    groups=("group",),
    files=FILES,
    options=("image_size", "csv"),
)
def load_imagefolder_csv(cfg: DataConfig, cache: DataCache | None) -> Loaded:
    import torch

    from fairsweep.data.pixels import Pixels

    folder = locate(cfg)
    csv_path = folder / cfg.csv.path
    rows = read_rows(csv_path, cfg.csv)
    files = [csv_path.parent / row.file for row in rows]
    if not cfg.csv.allow_outside:
        check_inside(csv_path, rows, files, cfg.csv.file_column)
    for row, path in zip(rows, files):
        if not path.is_file():
            raise UserError(errors.CSV_BAD_VALUE.format(name=NAME, path=csv_path, line=row.line,
                                                        column=cfg.csv.file_column, reason="no such image file",
                                                        value=row.file))
    classes = names_of(csv_path, rows, "target", cfg.csv.target_column, cfg.csv.classes, "data.csv.classes")
    groups = names_of(csv_path, rows, "group", cfg.csv.group_column, cfg.csv.groups, "data.csv.groups")
    preprocessing = {"image_size": cfg.image_size, "file_column": cfg.csv.file_column}
    decoded = get_or_decode(cache, NAME, folder, [csv_path, *files], preprocessing,
                            lambda: decode(files, cfg.image_size))
    y = torch.tensor([classes.index(row.target) for row in rows], dtype=torch.int64)
    g = torch.tensor([groups.index(row.group) for row in rows], dtype=torch.int64)
    pixels = Pixels.of(MEAN, STD, padding=4 if cfg.augment else 0, flip=cfg.augment)
    return Loaded(GroupedData(decoded["x"], y, g, tuple(classes), tuple(groups), pixels))


def read_rows(path: Path, cfg: CsvConfig) -> list[Row]:
    """The CSV's rows; a missing column or an empty cell is a `UserError` naming it (and its line)."""
    with reading(NAME, path), open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for key in ("file_column", "target_column", "group_column"):
            column = getattr(cfg, key)
            if column not in columns:
                raise UserError(errors.CSV_MISSING_COLUMN.format(name=NAME, path=path, column=column,
                                                                 key=f"data.csv.{key}", columns=", ".join(columns)))
        rows = []
        for record in reader:
            line = reader.line_num
            values = {key: (record.get(getattr(cfg, f"{key}_column")) or "").strip() for key in ("file", "target", "group")}
            for key, value in values.items():
                if not value:
                    raise UserError(errors.CSV_BAD_VALUE.format(name=NAME, path=path, line=line,
                                                                column=getattr(cfg, f"{key}_column"),
                                                                reason="empty cell", value=value))
            rows.append(Row(line, **values))
    return rows


def check_inside(csv_path: Path, rows: list[Row], files: list[Path], column: str) -> None:
    """Every image must resolve (symlinks followed) inside the CSV's folder: a `UserError` naming the first
    line that does not, and how many others do not."""
    folder = csv_path.parent.resolve()
    outside = [(row, resolved) for row, path in zip(rows, files)
               if (resolved := _resolved(path)) is not None and not resolved.is_relative_to(folder)]
    if not outside:
        return
    (row, resolved), others = outside[0], [row.line for row, _ in outside[1:]]
    also = (f" (as do {len(others)} other line(s): {', '.join(map(str, others[:5]))}{', ...' * (len(others) > 5)})"
            if others else "")
    raise UserError(errors.CSV_BAD_VALUE.format(
        name=NAME, path=csv_path, line=row.line, column=column, value=row.file,
        reason=errors.CSV_OUTSIDE.format(resolved=resolved, folder=folder, also=also)))


def _resolved(path: Path) -> Path | None:
    """`path` with symlinks and `..` resolved; None for a symlink loop (then no image file, said later)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def names_of(path: Path, rows: list[Row], field: str, column: str, declared: list[str] | None,
             key: str) -> list[str]:
    """The declared names (every value must be one), or the values found, sorted (numbers as numbers)."""
    if declared is None:
        found = {getattr(row, field) for row in rows}
        return sorted(found, key=lambda v: (0, float(v), v) if _is_number(v) else (1, 0.0, v))
    for row in rows:
        value = getattr(row, field)
        if value not in declared:
            raise UserError(errors.CSV_BAD_VALUE.format(
                name=NAME, path=path, line=row.line, column=column, value=value,
                reason=f"not one of {key} ({', '.join(declared)})"))
    return list(declared)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def decode(files: list[Path], size: int) -> Decoded:
    """x: (N, 3, size, size) uint8 images, in the CSV's row order."""
    return {"x": decode_images(NAME, files, size)}
