"""UTKFace, from the aligned-and-cropped JPEGs named `[age]_[gender]_[race]_[date&time].jpg` (the
published archive adds `.chip.jpg`). Target and group are each one of: age (binned, by default the
paper's 2-12, 13-17, 18-64, 65+; faces younger than the first bin are left out when age is used),
gender, race. Resized to `data.image_size` (32). Split 80/20 as the paper, stratified and seeded.

A few published file names lack a field; they are skipped, counted and reported once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from fairsweep.data import DataFiles, GroupedData, Loaded, locate, register_dataset
from fairsweep.data.cache import Decoded, get_or_decode
from fairsweep.data.readers import decode_images

if TYPE_CHECKING:
    import torch

    from fairsweep.data.cache import DataCache
    from fairsweep.spec import DataConfig

FILES = DataFiles(
    subdirs=("UTKFace", "utkface", ""),
    expected=lambda cfg: ("*.jpg",),
    what="the face images [age]_[gender]_[race]_[date].jpg (or .jpg.chip.jpg)",
    published="https://susanqq.github.io/UTKFace/ (\"Aligned&Cropped Faces\", UTKFace.tar.gz)",
)
NAME = re.compile(r"^(\d+)_([01])_([0-4])_\d+\.jpg(\.chip\.jpg)?$")
GENDERS = ("male", "female")
RACES = ("white", "black", "asian", "indian", "other")
ATTRIBUTES = ("age", "gender", "race")
# ImageNet's per-channel mean and std: UTKFace publishes none, and face models use these.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SKIPPED = ("utkface: skipped {count} file(s) whose names are not [age]_[gender]_[race]_[date].jpg "
           "(e.g. {examples}).")


@register_dataset(
    "utkface",
    description="UTKFace aligned & cropped faces (~23,700), resized; target and group: age bins, gender or race",
    targets=ATTRIBUTES,
    groups=ATTRIBUTES,
    files=FILES,
    test_fraction=0.2,
    options=("age_bins", "image_size"),
)
def load_utkface(cfg: DataConfig, cache: DataCache | None) -> Loaded:
    import torch

    from fairsweep.data.pixels import Pixels

    folder = locate(cfg)
    files, labels, malformed = parse_names(sorted(folder.glob("*.jpg")))
    decoded = get_or_decode(cache, "utkface", folder, files, {"image_size": cfg.image_size},
                            lambda: decode(files, cfg.image_size))
    columns = torch.tensor(labels, dtype=torch.int64).reshape(-1, 3)  # (N, 3): age, gender, race
    values, names = {}, {}
    for attribute in {cfg.target, cfg.group}:
        values[attribute], names[attribute] = attribute_of(columns, attribute, cfg.age_bins)
    keep = torch.ones(len(columns), dtype=torch.bool)
    for v in values.values():
        keep &= v >= 0  # ages below the first bin
    pixels = Pixels.of(MEAN, STD, padding=4 if cfg.augment else 0, flip=cfg.augment)
    data = GroupedData(decoded["x"][keep], values[cfg.target][keep], values[cfg.group][keep], names[cfg.target],
                       names[cfg.group], pixels)
    notes = (SKIPPED.format(count=len(malformed), examples=", ".join(malformed[:3])),) if malformed else ()
    return Loaded(data, notes=notes)


def parse_names(paths: list[Path]) -> tuple[list[Path], list[tuple[int, int, int]], list[str]]:
    """(well-named files, their (age, gender, race), the names of the malformed ones)."""
    files, labels, malformed = [], [], []
    for path in paths:
        match = NAME.match(path.name)
        if match is None:
            malformed.append(path.name)
            continue
        files.append(path)
        labels.append((int(match[1]), int(match[2]), int(match[3])))
    return files, labels, malformed


def attribute_of(columns: torch.Tensor, attribute: str, age_bins: list[int]) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(N,) int64 value of `attribute` for each face (−1: younger than the first age bin) and its names."""
    import torch

    if attribute == "gender":
        return columns[:, 1], GENDERS
    if attribute == "race":
        return columns[:, 2], RACES
    edges = torch.tensor(age_bins)
    bins = torch.bucketize(columns[:, 0].contiguous(), edges, right=True) - 1  # index of the last edge <= age
    names = [f"{lo}-{hi - 1}" for lo, hi in zip(age_bins, age_bins[1:])] + [f"{age_bins[-1]}+"]
    return bins, tuple(names)


def decode(files: list[Path], size: int) -> Decoded:
    """x: (N, 3, size, size) uint8 faces, in the order of `files`."""
    return {"x": decode_images("utkface", files, size)}
