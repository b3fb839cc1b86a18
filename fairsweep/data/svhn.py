"""SVHN (cropped digits), from `train_32x32.mat` and `test_32x32.mat` as published.

Each file holds `X`, (32, 32, 3, N) uint8, and `y`, (N, 1) labels 1..10 where 10 is the digit 0.
Naturally imbalanced; group = class. Random crops but no flips: a mirrored digit is another glyph.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fairsweep.data import DataFiles, GroupedData, Loaded, locate, register_dataset
from fairsweep.data.cache import Decoded, get_or_decode
from fairsweep.data.readers import reading

if TYPE_CHECKING:
    from fairsweep.data.cache import DataCache
    from fairsweep.spec import DataConfig

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
FILES = DataFiles(
    subdirs=("", "svhn", "SVHN"),
    expected=lambda cfg: tuple(SPLIT_FILES.values()),
    what="train_32x32.mat and test_32x32.mat",
    published="http://ufldl.stanford.edu/housenumbers/ (Format 2: cropped digits)",
)
# Per-channel mean and std of the training set's pixels on the 0..1 scale.
MEAN, STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
CLASS_NAMES = tuple(str(d) for d in range(10))


@register_dataset(
    "svhn",
    description="SVHN cropped digits (99,289 32x32 images), naturally imbalanced; group = class (digit)",
    targets=("class",),
    groups=("class",),
    files=FILES,
    test_fraction=None,
)
def load_svhn(cfg: DataConfig, cache: DataCache | None) -> Loaded:
    from fairsweep.data.pixels import Pixels

    folder = locate(cfg)
    files = [folder / name for name in SPLIT_FILES.values()]
    decoded = get_or_decode(cache, "svhn", folder, files, {}, lambda: decode(folder))
    pixels = Pixels.of(MEAN, STD, padding=4 if cfg.augment else 0, flip=False)

    def part(which: str) -> GroupedData:
        y = decoded[f"{which}_y"]
        return GroupedData(decoded[f"{which}_x"], y, y.clone(), CLASS_NAMES, CLASS_NAMES, pixels)

    return Loaded(part("train"), part("test"))


def decode(folder: Path) -> Decoded:
    """{train,test}_x (N, 3, 32, 32) uint8 and {train,test}_y (N,) int64 digits 0..9."""
    out: Decoded = {}
    for which, name in SPLIT_FILES.items():
        out[f"{which}_x"], out[f"{which}_y"] = read_mat(folder / name)
    return out


def read_mat(path: Path):
    import numpy as np
    import scipy.io
    import torch

    with reading("svhn", path):
        content = scipy.io.loadmat(path, variable_names=["X", "y"])
        if "X" not in content or "y" not in content:
            raise ValueError(f"expected variables X and y, found {sorted(k for k in content if not k.startswith('__'))}")
        x, y = content["X"], content["y"].reshape(-1).astype(np.int64)
        if x.dtype != np.uint8 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
            raise ValueError(f"expected X of shape (32, 32, 3, N) uint8 and N labels, got {x.dtype} {x.shape} "
                             f"and {len(y)} labels")
        if len(y) and not 1 <= y.min() <= y.max() <= 10:
            raise ValueError(f"labels outside 1..10: {sorted(set(y.tolist()) - set(range(1, 11)))}")
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (H, W, C, N) -> (N, C, H, W)
        return images, torch.from_numpy(y % 10)  # label 10 is the digit 0
