"""Equal parts of a sweep's trials held once in the driver.

The trials of a grid differ in a few values (a seed, a µ) and are alike in the rest: their specs'
other sections, their records' data shapes and base-model accuracies. Built one by one (a spec
validated per trial, a record parsed from its own file), each holds its own copy of what it shares,
and the driver, which keeps every trial of the plan and the record of every finished one, grows by
some 40 KB a trial. `Shared` hands back, for a part equal to one it has seen, the one it saw.

Only immutable parts are shared (frozen spec sections) or parts nobody changes in place (a record's
spec, data shapes and base accuracy; never its metrics, which Figure 9's effects update: of those only
the names, interned strings, are).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from pydantic import BaseModel

# Distinct values kept per part: a grid's sections take a few values each (a budget, a dataset), a
# varied one (µ) as many as the grid has and nothing to share, so the search for an equal one stays short.
KEPT_PER_PART = 16
RECORD_PARTS = ("group_sizes", "input_shape", "inputs", "model", "relu_sites", "linearization", "worker")
RECORD_KEYED = ("metrics", "trained", "lock_wait_s", "stage_seconds")  # the same keys in every record


class Shared:
    """A pool of parts seen, by name: `one(name, value)` is a part equal to `value` seen before under `name`,
    else `value` (kept for the next, while fewer than KEPT_PER_PART are)."""

    def __init__(self):
        self._seen: dict[str, list] = defaultdict(list)
        self._stages: dict[str, Any] = {}

    def stage(self, stage):
        """The stage of that identity seen before, else `stage` (stages compare by kind alone: by id here)."""
        return self._stages.setdefault(stage.id, stage)

    def one(self, name: str, value: Any) -> Any:
        seen = self._seen[name]
        for candidate in seen:
            if type(candidate) is type(value) and candidate == value:
                return candidate
        if len(seen) < KEPT_PER_PART:
            seen.append(value)
        return value

    def spec(self, spec):
        """A (frozen) spec with each section equal to one seen replaced by that one."""
        same = {}
        for name in type(spec).model_fields:
            section = getattr(spec, name)
            if isinstance(section, BaseModel) and (kept := self.one(f"spec.{name}", section)) is not section:
                same[name] = kept
        return spec.model_copy(update=same) if same else spec

    def record(self, record, **update):
        """A trial record (with `update` made) whose spec sections, data shapes, worker and base accuracy are ones
        seen, its metrics' and stages' names interned."""
        spec = update.pop("spec", record.spec)
        update["spec"] = {key: self.one(f"record.spec.{key}", value) if isinstance(value, dict) else value
                          for key, value in spec.items()}
        update.update({name: self.one(name, getattr(record, name)) for name in RECORD_PARTS})
        update.update({name: {sys.intern(key): value for key, value in getattr(record, name).items()}
                       for name in RECORD_KEYED})
        update["stages"] = {sys.intern(kind): sys.intern(stage) for kind, stage in record.stages.items()}
        update["accuracy"] = {split: self.one(f"accuracy.{split}", value) if split == "base" else value
                              for split, value in record.accuracy.items()}
        return record.model_copy(update=update)
