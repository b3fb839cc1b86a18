"""What a data configuration gets wrong given the dataset registry, found before anything is read.

Switching datasets from the command line (`--set data.dataset=cifar10`) leaves the spec's other `data`
keys written for the old one. Every key that does not fit the new dataset is a problem of its own,
reported together with the rest (a file-backed dataset's missing root or files included), each naming
the `--set` that fixes it, so one invocation says all that is still needed. Keys that only other
datasets read (`data.age_bins`, `data.csv`, ...) are ignored, with a note (`ignored_keys`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from fairsweep import errors
from fairsweep.data import DATASETS, dataset_info, list_datasets, locate
from fairsweep.errors import UserError

if TYPE_CHECKING:
    from fairsweep.data import DatasetInfo
    from fairsweep.spec import DataConfig

Label = Callable[[str], str]  # a `data` key -> the key as the user wrote it (a grid's, say)


def data_problems(cfg: DataConfig, label: Label = lambda key: f"data.{key}") -> list[str]:
    """What is wrong with `cfg` given the registry (the spec checks the rest): the dataset, its target and
    group attributes, the test fraction, and whether a file-backed dataset's root holds its files (looked
    for, not read)."""
    if cfg.dataset not in DATASETS.names():
        return [errors.BAD_VALUE.format(key=label("dataset"), value=cfg.dataset,
                                        reason=errors.unknown_name("dataset", cfg.dataset, list_datasets()))]
    info = dataset_info(cfg.dataset)
    problems = []
    target = cfg.target if cfg.target in info.targets else None  # None: the dataset's default, or a mistake
    if cfg.target is not None and target is None:
        target = errors.closest(cfg.target, info.targets) or info.targets[0]
        problems.append(_no_such_attribute(info, "target", cfg.target, info.targets, target, label))
    if cfg.group is not None and cfg.group not in info.groups:
        target = target or info.targets[0]
        group = errors.closest(cfg.group, info.groups) or (target if target in info.groups else info.groups[0])
        problems.append(_no_such_attribute(info, "group", cfg.group, info.groups, group, label))
    if cfg.test_fraction is not None and info.test_fraction is None:
        fix = (errors.ADD_SET.format(key="data.test_fraction", value="null", also="")
               if label("test_fraction") == "data.test_fraction" else errors.LEAVE_OUT_OF_GRID)
        problems.append(errors.OWN_TEST_SET.format(key=label("test_fraction"), value=cfg.test_fraction,
                                                   dataset=cfg.dataset, fix=fix))
    elif cfg.test_fraction is None and cfg.val_fraction + (info.test_fraction or 0.0) >= 1:
        problems.append(errors.BAD_VALUE.format(
            key=label("val_fraction"), value=cfg.val_fraction,
            reason=f"with {cfg.dataset}'s test fraction {info.test_fraction}, val_fraction + test_fraction must be < 1"))
    if not info.embedded:
        try:
            locate(cfg)
        except UserError as exc:  # no root given, or its files are not there
            problems.extend(exc.problems)
    return problems


def _no_such_attribute(info: DatasetInfo, what: str, value: str, valid: tuple[str, ...], suggested: str,
                       label: Label) -> str:
    """`data.target` / `data.group` names an attribute the dataset has not: its attributes, and the `--set`
    to add (the closest, else the dataset's default; `null` where the grid varies the dataset)."""
    key = f"data.{what}"
    if label(what) != key:  # the value is a grid's: that is where to change it
        fix = ""
    elif label("dataset") != "data.dataset":  # the grid varies the dataset: only null fits them all
        fix = errors.ADD_SET.format(key=key, value="null", also=" (each dataset's own)")
    else:
        others = [name for name in valid if name != suggested]
        fix = errors.ADD_SET.format(key=key, value=suggested, also=f" (or {', '.join(others)})" if others else "")
    return errors.NO_SUCH_ATTRIBUTE.format(key=label(what), dataset=info.name, what=what, value=value,
                                           hint=errors.did_you_mean(value, valid), valid=", ".join(valid), fix=fix)


def option_readers() -> dict[str, list[str]]:
    """Each `data` key that only some datasets read (their `options`, e.g. `age_bins`) -> those datasets."""
    readers: dict[str, list[str]] = {}
    for name in list_datasets():
        for key in dataset_info(name).options:
            readers.setdefault(key, []).append(name)
    return readers


def ignored_keys(cfg: DataConfig, given: Iterable[str]) -> list[str]:
    """Notes on the `data` keys in `given` (those the spec sets) that only other datasets read."""
    readers = option_readers()
    own = dataset_info(cfg.dataset).options if cfg.dataset in DATASETS.names() else ()
    return [errors.KEY_IGNORED.format(key=f"data.{key}", readers=" and ".join(readers[key]), dataset=cfg.dataset)
            for key in sorted(set(given)) if key in readers and key not in own]
