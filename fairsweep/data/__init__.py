"""Dataset registry.

A dataset is a loader that returns a `GroupedData`: inputs, targets, and a group for every
sample, plus the names of classes and groups. Splitting (seeded, stratified by target × group)
and class imbalance are shared by every dataset, so a new dataset only has to load its files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fairsweep.registry import Registry

if TYPE_CHECKING:  # torch is imported lazily so that the CLI starts fast
    import torch

    from fairsweep.spec import DataConfig


@dataclass(frozen=True)
class GroupedData:
    x: torch.Tensor  # (N, C, H, W) float32, normalized
    y: torch.Tensor  # (N,) int64 target
    g: torch.Tensor  # (N,) int64 group index into group_names
    class_names: tuple[str, ...]
    group_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> GroupedData:
        return GroupedData(self.x[index], self.y[index], self.g[index], self.class_names, self.group_names)

    def to(self, device: torch.device | str) -> GroupedData:
        return GroupedData(self.x.to(device), self.y.to(device), self.g.to(device), self.class_names,
                           self.group_names)

    def group_sizes(self) -> dict[str, int]:
        import torch

        counts = torch.bincount(self.g, minlength=len(self.group_names))
        return {name: int(c) for name, c in zip(self.group_names, counts)}


@dataclass(frozen=True)
class Splits:
    train: GroupedData
    val: GroupedData
    test: GroupedData

    def to(self, device: torch.device | str) -> Splits:
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    targets: tuple[str, ...]  # attributes usable as `data.target`
    groups: tuple[str, ...]  # attributes usable as `data.group`
    embedded: bool  # ships with the package; needs no `data.root`
    load: Callable[[DataConfig], GroupedData]


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(name: str, *, description: str, targets: tuple[str, ...], groups: tuple[str, ...],
                     embedded: bool = False) -> Callable:
    def wrap(load: Callable[[DataConfig], GroupedData]) -> Callable[[DataConfig], GroupedData]:
        DATASETS.add(name, DatasetInfo(name, description, targets, groups, embedded, load))
        return load

    return wrap


list_datasets = DATASETS.names
dataset_info = DATASETS.get


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Load `cfg.dataset`, apply the class imbalance and split it, all determined by `seed`."""
    data = DATASETS.get(cfg.dataset).load(cfg)
    if cfg.imbalance is not None:
        data = apply_imbalance(data, cfg.imbalance.minority_classes, cfg.imbalance.minority_keep,
                               cfg.imbalance.majority_keep, seed)
    return split(data, cfg.val_fraction, cfg.test_fraction, seed)


def apply_imbalance(data: GroupedData, minority_classes: list[int], minority_keep: float,
                    majority_keep: float, seed: int) -> GroupedData:
    """Keep a seeded `minority_keep` fraction of each minority class and `majority_keep` of the others.

    Applied before splitting, so train, validation and test share the same imbalance (as the paper
    does for CIFAR-10, where both its train and test sets are unbalanced).
    """
    import torch

    gen = torch.Generator().manual_seed(10_007 * seed + 1)
    keep = []
    for c in range(len(data.class_names)):
        idx = torch.nonzero(data.y == c).flatten()
        frac = minority_keep if c in minority_classes else majority_keep
        n = max(1, round(frac * len(idx)))
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    return data.subset(torch.sort(torch.cat(keep)).values)


def split(data: GroupedData, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Seeded split, stratified by (target, group), so every split keeps every group's share."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    strata = (data.y * len(data.group_names) + data.g).numpy()
    index = np.arange(len(data))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=strata, random_state=seed)
    val_of_rest = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_of_rest, stratify=strata[rest], random_state=seed)
    import torch

    def part(index: np.ndarray) -> GroupedData:
        return data.subset(torch.from_numpy(np.sort(index)))

    return Splits(part(train), part(val), part(test))


# Register the built-in datasets (their modules import heavy libraries only inside the loaders).
from fairsweep.data import embedded as _embedded  # noqa: E402,F401
