"""CIFAR-10, from the python pickle batches its publisher ships (`cifar-10-batches-py/`).

Unbalanced as the paper does by default (`data.imbalance`): five classes keep 90 % of their
samples and the other five 10 %, in the training and the test set alike. Group = class.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from fairsweep.data import DataFiles, GroupedData, Loaded, locate, register_dataset
from fairsweep.data.cache import Decoded, get_or_decode
from fairsweep.data.readers import reading

if TYPE_CHECKING:
    from fairsweep.data.cache import DataCache
    from fairsweep.spec import DataConfig

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
FILES = DataFiles(
    subdirs=("cifar-10-batches-py", ""),
    expected=lambda cfg: (*TRAIN_BATCHES, "test_batch", "batches.meta"),
    what="the python batches data_batch_1 ... data_batch_5, test_batch and batches.meta",
    published="https://www.cs.toronto.edu/~kriz/cifar.html (\"CIFAR-10 python version\", cifar-10-python.tar.gz)",
)
# Per-channel mean and std of the training set's pixels on the 0..1 scale.
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PAPER_IMBALANCE = {"minority_classes": [5, 6, 7, 8, 9], "minority_keep": 0.1, "majority_keep": 0.9}


@register_dataset(
    "cifar10",
    description="CIFAR-10 (60,000 32x32 images, 10 classes), unbalanced as the paper: 5 classes keep 90 %, "
                "5 keep 10 %; group = class",
    targets=("class",),
    groups=("class",),
    files=FILES,
    test_fraction=None,
    default_imbalance=PAPER_IMBALANCE,
)
def load_cifar10(cfg: DataConfig, cache: DataCache | None) -> Loaded:
    from fairsweep.data.pixels import Pixels

    folder = locate(cfg)
    files = [folder / name for name in FILES.expected(cfg)]
    decoded = get_or_decode(cache, "cifar10", folder, files, {}, lambda: decode(folder))
    names = tuple(decoded["class_names"])
    pixels = Pixels.of(MEAN, STD, padding=4 if cfg.augment else 0, flip=cfg.augment)

    def part(which: str) -> GroupedData:
        y = decoded[f"{which}_y"]
        return GroupedData(decoded[f"{which}_x"], y, y.clone(), names, names, pixels)

    return Loaded(part("train"), part("test"))


def decode(folder: Path) -> Decoded:
    """{train,test}_x (N, 3, 32, 32) uint8, {train,test}_y (N,) int64, class_names."""
    import torch

    train = [read_batch(folder / name) for name in TRAIN_BATCHES]
    test = read_batch(folder / "test_batch")
    meta_path = folder / "batches.meta"
    with reading("cifar10", meta_path):
        names = [n.decode() if isinstance(n, bytes) else n for n in unpickle_arrays(meta_path)["label_names"]]
    return {"train_x": torch.cat([x for x, _ in train]), "train_y": torch.cat([y for _, y in train]),
            "test_x": test[0], "test_y": test[1], "class_names": names}


def read_batch(path: Path):
    """One pickled batch: `data` (N, 3072) uint8 rows of 1024 red, 1024 green, 1024 blue pixels; `labels`."""
    import numpy as np
    import torch

    with reading("cifar10", path):
        batch = unpickle_arrays(path)
        data, labels = batch["data"], np.asarray(batch["labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise ValueError(f"expected `data` of shape (N, 3072) uint8 and N labels, got {data.dtype} "
                             f"{data.shape} and {len(labels)} labels")
        if len(labels) and not 0 <= labels.min() <= labels.max() <= 9:
            raise ValueError(f"labels outside 0..9: {sorted(set(labels.tolist()) - set(range(10)))}")
        return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only: a pickle file can run any code it names, and a
    dataset file is no reason to run code."""

    ALLOWED = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")}
    ALLOWED |= {("numpy", "ndarray"), ("numpy", "dtype")}
    ALLOWED |= {("_codecs", "encode")}  # how Python 3 writes bytes at protocol 2 (a re-pickled batch)

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks to load `{module}.{name}`, which a CIFAR batch never holds")
        return super().find_class(module, name)


def unpickle_arrays(path: Path) -> dict:
    """A CIFAR pickle (written by Python 2, so its keys are bytes) as a dict with str keys."""
    with open(path, "rb") as handle:
        content = _ArraysOnly(handle, encoding="bytes").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}
