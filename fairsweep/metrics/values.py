"""Group metrics as values (after fairlearn's MetricFrame): `GroupMetrics`, the trial's metric dict, the
relative drops. Pure Python, no torch: records and reports use them without loading a model."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GroupMetrics:
    """A metric overall and for every group present in the evaluated data."""

    overall: float
    by_group: dict[str, float]
    counts: dict[str, int]

    def to_json(self) -> dict:
        return asdict(self)

    def difference(self) -> float:
        """max − min over groups."""
        return max(self.by_group.values()) - min(self.by_group.values())

    def group_min(self) -> float:
        return min(self.by_group.values())

    def group_max(self) -> float:
        return max(self.by_group.values())

    def worst_group(self, higher_is_better: bool = True) -> str:
        """The name of the group with the lowest value (the highest, where lower is better)."""
        pick = min if higher_is_better else max
        return pick(self.by_group, key=self.by_group.__getitem__)

    def keyed(self, prefix: str) -> dict[str, float]:
        """`{prefix}/<g>` → value for every group, with MLflow-safe group names."""
        return {f"{prefix}/{safe_key(name)}": value for name, value in self.by_group.items()}


KEY_MAX = 64  # characters of a group's key; longer names are shortened (and made unique by the suffix)
_PLAIN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-.]*")


def safe_key(name: str) -> str:
    """The group's name in MLflow keys and metric dicts (`group_acc/<key>`): the name itself where it is
    plain (letters, digits, `_ - .`, not led by `.`, at most `KEY_MAX` characters); otherwise a readable
    form (every other character as `_`, shortened) and `-` with 8 hex digits of the name's hash, so
    that `a b`, `a_b` and `a/b` keep keys of their own. Depends on the name alone, so every trial and
    sweep keys a group alike; pre-flight checks that a dataset's names get distinct keys."""
    if _PLAIN.fullmatch(name) and len(name) <= KEY_MAX:
        return name
    readable = re.sub(r"[^A-Za-z0-9_\-.]", "_", name)[:KEY_MAX - 9].lstrip(".")
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def key_collisions(names) -> list[tuple[str, str]]:
    """Pairs of group names that would share a key (only a name written like another's hashed key)."""
    seen: dict[str, str] = {}
    pairs = []
    for name in names:
        key = safe_key(name)
        if key in seen and seen[key] != name:
            pairs.append((seen[key], name))
        seen.setdefault(key, name)
    return pairs


def drop_pct(base: float, final: float) -> float:
    """(base − final) / base × 100; NaN where the base model got none of the group right."""
    return (base - final) / base * 100.0 if base > 0 else math.nan


def minority_groups(train_sizes: dict[str, int]) -> set[str]:
    """The groups with fewer training samples than half the largest group's (digits' rare classes, the
    glyphs' dark 10 %, toy2d's minority; UTKFace's races but white): where the paper expects the losses."""
    largest = max(train_sizes.values(), default=0)
    return {name for name, n in train_sizes.items() if n < largest / 2}


def kind_means(values: GroupMetrics, minority: set[str]) -> tuple[float, float]:
    """The mean over the minority groups and over the others (majority) of a per-group value; NaN for a kind
    without a group (or without a finite value)."""
    def mean(names) -> float:
        finite = [values.by_group[n] for n in names if not math.isnan(values.by_group[n])]
        return sum(finite) / len(finite) if finite else math.nan

    return mean(n for n in values.by_group if n in minority), mean(n for n in values.by_group if n not in minority)


def trial_metrics(final: GroupMetrics, base: GroupMetrics, relu_count: int, base_relu_count: int,
                  param_dist: float, train_sizes: dict[str, int] | None = None) -> dict[str, float]:
    """The metrics of a trial's final model against the same seed's base model (docs/metrics.md); with the
    training split's group sizes, also the mean drops of the minority and the majority groups."""
    drops = relative_drop(base, final)
    finite = [d for d in drops.by_group.values() if not math.isnan(d)]
    kinds = {}
    if train_sizes is not None:
        minority, majority = kind_means(drops, minority_groups(train_sizes))
        kinds = {"minority_drop_pct": minority, "majority_drop_pct": majority}
    return {
        "acc": final.overall,
        **final.keyed("group_acc"),
        **drops.keyed("group_drop_pct"),
        "drop_gap_pct": max(finite) - min(finite) if finite else math.nan,
        "acc_gap": final.difference(),
        "worst_group_acc": final.group_min(),
        "relu_count": float(relu_count),
        "relu_fraction": relu_count / base_relu_count,
        "param_dist": param_dist,
        **kinds,
    }


def relative_drop(reference: GroupMetrics, other: GroupMetrics) -> GroupMetrics:
    """Per group (reference − other) / reference × 100, the paper's relative drop in accuracy: against the
    base model for linearization (Figure 6), against the plain-KD model for mitigation (Figure 9)."""
    by_group = {name: drop_pct(reference.by_group[name], value) for name, value in other.by_group.items()}
    return GroupMetrics(drop_pct(reference.overall, other.overall), by_group, other.counts)


def group_size_metrics(group_sizes: dict[str, dict[str, int]]) -> dict[str, int]:
    """`group_size/<split>/<g>`: the samples of each group in each split (the paper prints them)."""
    return {f"group_size/{split}/{safe_key(g)}": n for split, sizes in group_sizes.items() for g, n in sizes.items()}
