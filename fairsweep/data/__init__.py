"""Dataset registry.

A dataset is a loader that returns a `Loaded`: a `GroupedData` (inputs, targets and a group for
every sample, plus the names of classes and groups) and, when its publisher ships one, its test
set. Splitting (seeded, stratified by target × group), class imbalance and the minimum group size
are shared by every dataset, so a new dataset only has to find and read its files.

Embedded datasets hold normalised float inputs. File-backed ones hold uint8 images, decoded once
into a cache beside the stage store (`fairsweep.data.cache`), and a `Pixels` recipe that turns a
batch of them into normalised (and, for training, augmented) float inputs with tensor ops.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairsweep import errors
from fairsweep.errors import UserError
from fairsweep.registry import Registry

if TYPE_CHECKING:  # torch is imported lazily so that the CLI starts fast
    import torch

    from fairsweep.data.cache import DataCache
    from fairsweep.data.pixels import Pixels
    from fairsweep.spec import DataConfig

DATA_ENV = "FAIRSWEEP_DATA"  # the data root when the spec sets no `data.root`


@dataclass(frozen=True)
class GroupedData:
    x: torch.Tensor  # (N, C, H, W) float32 normalized; uint8 images when `pixels` is set
    y: torch.Tensor  # (N,) int64 target
    g: torch.Tensor  # (N,) int64 group index into group_names
    class_names: tuple[str, ...]
    group_names: tuple[str, ...]
    pixels: Pixels | None = None  # how uint8 images become model inputs; None: `x` already is
    # (mean, std) of the raw values `x` was standardised with, `x = (raw − mean) / std` (digits); None: not
    standardized: tuple[float, float] | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> GroupedData:
        return replace(self, x=self.x[index], y=self.y[index], g=self.g[index])

    def to(self, device: torch.device | str) -> GroupedData:
        pixels = self.pixels.to(device) if self.pixels is not None else None
        return replace(self, x=self.x.to(device), y=self.y.to(device), g=self.g.to(device), pixels=pixels)

    def inputs(self, index: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Model inputs of the samples at `index` (all by default): uint8 images become normalised
        floats, randomly cropped and flipped when a `generator` is given (training batches)."""
        x = self.x if index is None else self.x[index]
        return x if self.pixels is None else self.pixels(x, generator)

    def preprocessing(self) -> dict[str, Any]:
        """What the dataset's raw inputs are and how they become model inputs, as JSON: `dtype` (the raw
        inputs': uint8 images, or float32 values) and `transform`: `affine` (`x.float() · scale + shift`, per
        channel, `Pixels`), `standardize` (`(x − mean) / std`), or `none` (the raw inputs are the model's)."""
        if self.pixels is not None:
            return {"dtype": "uint8", "transform": "affine", "scale": self.pixels.scale.flatten().tolist(),
                    "shift": self.pixels.shift.flatten().tolist()}
        if self.standardized is not None:
            mean, std = self.standardized
            return {"dtype": "float32", "transform": "standardize", "mean": mean, "std": std}
        return {"dtype": "float32", "transform": "none"}

    def group_sizes(self) -> dict[str, int]:
        import torch

        counts = torch.bincount(self.g, minlength=len(self.group_names))
        return {name: int(c) for name, c in zip(self.group_names, counts)}


@dataclass(frozen=True)
class Splits:
    train: GroupedData
    val: GroupedData
    test: GroupedData
    notes: tuple[str, ...] = ()  # what the user should hear once about the data, e.g. files skipped
    digest: str = ""  # of the loaded content, before imbalance and split (`content_digest`)

    def to(self, device: torch.device | str) -> Splits:
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def group_sizes(self) -> dict[str, dict[str, int]]:
        return {"train": self.train.group_sizes(), "val": self.val.group_sizes(), "test": self.test.group_sizes()}


@dataclass(frozen=True)
class Loaded:
    """What a loader returns."""

    data: GroupedData  # every sample to split; the publisher's training set when `test` is given
    test: GroupedData | None = None  # the publisher's own test set, for datasets that ship one
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataFiles:
    """Where a file-backed dataset lives under the data root, for finding it and for messages."""

    subdirs: tuple[str, ...]  # searched in order under the root; "" is the root itself
    expected: Callable[[DataConfig], tuple[str, ...]]  # file names or glob patterns it needs
    what: str  # the expected files in words, for messages
    published: str  # where to get it

    def locate(self, root: Path, cfg: DataConfig) -> Path:
        """The first searched directory that holds any expected file; a `UserError` naming what is
        missing if none holds them all."""
        searched = [root / sub for sub in self.subdirs]
        expected = self.expected(cfg)
        for folder in searched:
            present = [p for p in expected if any(folder.glob(p))]
            if present:
                missing = [p for p in expected if p not in present]
                if not missing:
                    return folder
                raise self._not_found(cfg.dataset, [folder], missing)
        raise self._not_found(cfg.dataset, searched, list(expected))

    def found(self, root: Path, cfg: DataConfig) -> Path | None:
        try:
            return self.locate(root, cfg)
        except UserError:
            return None

    def _not_found(self, name: str, searched: list[Path], missing: list[str]) -> UserError:
        return UserError(errors.DATA_NOT_FOUND.format(
            name=name, missing=", ".join(missing), searched=" or ".join(str(p) for p in searched),
            expected=self.what, published=self.published))

    def where(self) -> str:
        """The searched subdirectories, in words."""
        return " or ".join(f"{sub}/" if sub else "the root itself" for sub in self.subdirs)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    targets: tuple[str, ...]  # attributes usable as `data.target`; the first is the default
    groups: tuple[str, ...]  # attributes usable as `data.group`; the default is the target
    load: Callable[[DataConfig, DataCache | None], Loaded]
    files: DataFiles | None = None  # None: embedded, ships with the package and needs no `data.root`
    test_fraction: float | None = 0.25  # default share held out for test; None: the publisher's test set
    default_imbalance: dict | None = None  # `data.imbalance` when the spec leaves the key out
    options: tuple[str, ...] = ()  # the `data` keys of some datasets only that this one reads (`age_bins`)

    @property
    def embedded(self) -> bool:
        return self.files is None


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(name: str, *, description: str, targets: tuple[str, ...], groups: tuple[str, ...],
                     files: DataFiles | None = None, test_fraction: float | None = 0.25,
                     default_imbalance: dict | None = None, options: tuple[str, ...] = ()) -> Callable:
    def wrap(load: Callable[[DataConfig, DataCache | None], Loaded]) -> Callable:
        @functools.wraps(load)
        def load_resolved(cfg: DataConfig, cache: DataCache | None) -> Loaded:  # a loader sees every default filled
            return load(resolve(cfg), cache)

        DATASETS.add(name, DatasetInfo(name, description, targets, groups, load_resolved, files, test_fraction,
                                       default_imbalance, options))
        return load

    return wrap


list_datasets = DATASETS.names
dataset_info = DATASETS.get


def data_root(cfg: DataConfig) -> Path:
    """`data.root`, else $FAIRSWEEP_DATA; a `UserError` if neither is set."""
    root = cfg.root or os.environ.get(DATA_ENV)
    if not root:
        raise UserError(errors.DATA_ROOT_UNSET.format(name=cfg.dataset, env=DATA_ENV))
    return Path(root).expanduser()


def locate(cfg: DataConfig) -> Path:
    """The directory holding `cfg.dataset`'s files (file-backed datasets only)."""
    return dataset_info(cfg.dataset).files.locate(data_root(cfg), cfg)


def resolve(cfg: DataConfig) -> DataConfig:
    """`cfg` with the dataset's defaults filled in: the target (its first target attribute), the group (the
    target where it is a group attribute, else the first), the imbalance (`default`: the dataset's own) and
    the test fraction (None only for datasets that ship a test set). Assumes `checks.data_problems(cfg)` is
    empty."""
    info = dataset_info(cfg.dataset)
    target = cfg.target or info.targets[0]
    group = cfg.group or (target if target in info.groups else info.groups[0])
    imbalance = info.default_imbalance if cfg.imbalance == "default" else cfg.imbalance
    test_fraction = cfg.test_fraction if cfg.test_fraction is not None else info.test_fraction
    update = {"target": target, "group": group, "imbalance": imbalance, "test_fraction": test_fraction}
    return type(cfg).model_validate({**cfg.model_dump(mode="json"), **update})


def load_splits(cfg: DataConfig, seed: int, cache: DataCache | None = None) -> Splits:
    """Load `cfg.dataset`, apply the class imbalance and split it, all determined by `seed`.

    Datasets without a published test set are imbalanced, then split into train / validation /
    test. Those with one (CIFAR-10, SVHN) keep it as the test split, are imbalanced in train and
    test alike (as the paper does), and have `val_fraction` of their training set held out. The
    splits carry the digest of the loaded content (`content_digest`), before imbalance and split.
    """
    cfg = resolve(cfg)
    loaded = dataset_info(cfg.dataset).load(cfg, cache)
    data, test = loaded.data, loaded.test
    _check_minority_classes(cfg, data)
    if cfg.imbalance is not None:
        imbalance = cfg.imbalance
        data = apply_imbalance(data, imbalance.minority_classes, imbalance.minority_keep, imbalance.majority_keep, seed)
        if test is not None:
            test = apply_imbalance(test, imbalance.minority_classes, imbalance.minority_keep,
                                   imbalance.majority_keep, seed + 1)
    if test is None:
        splits = split(data, cfg.val_fraction, cfg.test_fraction, seed, cache)
    else:
        train, val = split_off(data, cfg.val_fraction, seed, cache)
        splits = Splits(train, val, test)
    check_group_sizes(splits, cfg.min_group_size)
    return replace(splits, notes=loaded.notes, digest=content_digest(loaded))


def content_digest(loaded: Loaded) -> str:
    """A digest of what a dataset's loader returned: every tensor's bytes, the class and group names and
    the input recipe. Two data roots holding the same files give the same digest; a changed file, another
    target or group attribute, another image size, a different one (the stages' identity includes it)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for part in (loaded.data, loaded.test):
        if part is None:
            digest.update(b"no test set")
            continue
        tensors = [part.x, part.y, part.g]
        if part.pixels is not None:
            tensors += [part.pixels.scale, part.pixels.shift, torch.tensor([part.pixels.padding, part.pixels.flip])]
        for tensor in tensors:
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        digest.update(repr((part.class_names, part.group_names)).encode())
    return digest.hexdigest()[:16]


class ContentDigests:
    """The content digest (`content_digest`) of each data configuration, each loaded once: a file-backed
    dataset through `file_cache` if given (its decode is the expensive part and is kept), an embedded
    one without (nothing is written before the sweep's checks have passed)."""

    def __init__(self, file_cache: DataCache | None = None):
        self.file_cache = file_cache
        self._known: dict[str, str] = {}

    def __call__(self, cfg: DataConfig) -> str:
        key = self._key(cfg)
        if key not in self._known:
            info = dataset_info(cfg.dataset)
            self._known[key] = content_digest(info.load(cfg, None if info.embedded else self.file_cache))
        return self._known[key]

    @staticmethod
    def _key(cfg: DataConfig) -> str:
        """What loading depends on: the configuration and, for a file-backed dataset, the root it resolves to."""
        import json

        root = None if dataset_info(cfg.dataset).embedded else str(data_root(cfg).resolve())
        return json.dumps([cfg.model_dump(mode="json"), root], sort_keys=True)


def _check_minority_classes(cfg: DataConfig, data: GroupedData) -> None:
    if cfg.imbalance is None:
        return
    bad = [c for c in cfg.imbalance.minority_classes if not 0 <= c < len(data.class_names)]
    if bad:
        raise UserError(errors.BAD_VALUE.format(
            key="data.imbalance.minority_classes", value=bad,
            reason=f"{cfg.dataset} has classes 0..{len(data.class_names) - 1} ({', '.join(data.class_names)})"))


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


def split(data: GroupedData, val_fraction: float, test_fraction: float, seed: int,
          cache: DataCache | None = None) -> Splits:
    """Seeded split, stratified by (target, group), so every split keeps every group's share."""
    import numpy as np

    rest, test = _stratified(data, np.arange(len(data)), test_fraction, seed, cache)
    train, val = _stratified(data, rest, val_fraction / (1.0 - test_fraction), seed, cache)
    return Splits(*(_part(data, index) for index in (train, val, test)))


def split_off(data: GroupedData, fraction: float, seed: int,
              cache: DataCache | None = None) -> tuple[GroupedData, GroupedData]:
    """(the rest, a seeded `fraction` of `data`), stratified by (target, group)."""
    import numpy as np

    rest, part = _stratified(data, np.arange(len(data)), fraction, seed, cache)
    return _part(data, rest), _part(data, part)


def _stratified(data: GroupedData, index, fraction: float, seed: int, cache: DataCache | None = None):
    """Split the sample indices `index` into (rest, a `fraction` of them), stratified by (target, group)
    by scikit-learn's `train_test_split`; through `cache` (keyed by the indices, their strata, the
    fraction and the seed) when there is one."""
    import numpy as np

    strata = (data.y * len(data.group_names) + data.g).numpy()[index]
    values, counts = np.unique(strata, return_counts=True)
    for value, count in zip(values, counts):  # sklearn needs every stratum at least twice
        if count < 2:
            target, group = divmod(int(value), len(data.group_names))
            raise UserError(errors.STRATUM_TOO_SMALL.format(
                target=data.class_names[target], group=data.group_names[group], count=int(count)))

    def compute() -> dict:
        import torch
        from sklearn.model_selection import train_test_split

        rest, part = train_test_split(index, test_size=fraction, stratify=strata, random_state=seed)
        return {"rest": torch.from_numpy(rest), "part": torch.from_numpy(part)}

    if cache is None:
        result = compute()
    else:
        from importlib.metadata import version

        index, strata = np.ascontiguousarray(index, dtype=np.int64), np.ascontiguousarray(strata, dtype=np.int64)
        result = cache.memo("split", {"index": index.tobytes(), "strata": strata.tobytes(), "fraction": fraction,
                                      "seed": seed, "scikit-learn": version("scikit-learn")}, compute)
    return result["rest"].numpy(), result["part"].numpy()


def _part(data: GroupedData, index) -> GroupedData:
    import numpy as np
    import torch

    return data.subset(torch.from_numpy(np.sort(index)))


def check_group_sizes(splits: Splits, minimum: int) -> None:
    """Every group must keep at least `minimum` samples in every split (`data.min_group_size`)."""
    problems = [errors.GROUP_TOO_SMALL.format(group=group, split=name, count=count, minimum=minimum)
                for name, sizes in splits.group_sizes().items() for group, count in sizes.items() if count < minimum]
    if problems:
        raise UserError(problems)


# Register the built-in datasets (their modules import heavy libraries only inside the loaders).
from fairsweep.data import embedded as _embedded  # noqa: E402,F401
from fairsweep.data import glyphs as _glyphs  # noqa: E402,F401
from fairsweep.data import cifar10 as _cifar10  # noqa: E402,F401
from fairsweep.data import svhn as _svhn  # noqa: E402,F401
from fairsweep.data import utkface as _utkface  # noqa: E402,F401
from fairsweep.data import imagefolder_csv as _imagefolder_csv  # noqa: E402,F401
