"""What a run holds besides MLflow's own bookkeeping: the spec as flat dotted params, the group sizes,
the curves' keys."""

from __future__ import annotations

import json
from typing import Any

from fairsweep.metrics.values import safe_key


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and None become their JSON text."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


def group_size_metrics(group_sizes: dict[str, dict[str, int]]) -> dict[str, int]:
    """`group_size/<split>/<g>`: the samples of each group in each split (the paper prints them)."""
    return {f"group_size/{split}/{safe_key(g)}": n for split, sizes in group_sizes.items() for g, n in sizes.items()}


def curve_key(key: str) -> str:
    """A stage history's key as an MLflow key: a per-group curve (`multiplier/<group>`) with the group's key."""
    head, slash, group = key.partition("/")
    return f"{head}/{safe_key(group)}" if slash else key
