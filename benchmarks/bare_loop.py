"""A bare Python loop over a sweep's trials, as a script of its own: the baseline of `sweep_overhead.py`.

    python benchmarks/bare_loop.py SPEC.json STORAGE [WARM_STORAGE]

Imports what the trials need, then calls `run_trial` for every trial of the spec's plan, one after
another with one torch thread, on the stage store at STORAGE, whose data cache the caller has filled
beforehand (as `fairsweep run`'s driver fills its store's before the trials start). Prints one JSON
line: `seconds` from this script's first line to the end of the loop (the imports, torch's
first-use costs, the trials), `imports`, and `inside`, the sum of `run_trial`'s own seconds. With
WARM_STORAGE, the loop then runs again on that store in this warm process: `warm_seconds`,
`warm_inside`.
"""

import time

STARTED = time.perf_counter()

import json  # noqa: E402  (the imports are part of what is timed)
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from fairsweep.spec import Spec  # noqa: E402
from fairsweep.sweep.plan import make_plan  # noqa: E402
from fairsweep.sweep.store import StageStore  # noqa: E402
from fairsweep.sweep.trial import run_trial  # noqa: E402

IMPORTED = time.perf_counter()


def loop(spec: Spec, storage: str) -> float:
    """`run_trial` for every trial of the plan on the store at `storage`; the sum of their own seconds."""
    store = StageStore(storage)
    return sum(run_trial(trial, store).timing.seconds for trial in make_plan(spec).trials)


def main() -> None:
    spec_path, storage, *warm = sys.argv[1:]
    torch.set_num_threads(1)  # as the Tune trainable sets for cpus_per_trial 1
    spec = Spec.model_validate_json(Path(spec_path).read_text())
    inside = loop(spec, storage)
    out = {"seconds": time.perf_counter() - STARTED, "imports": IMPORTED - STARTED, "inside": inside}
    if warm:
        started = time.perf_counter()
        out["warm_inside"] = loop(spec, warm[0])
        out["warm_seconds"] = time.perf_counter() - started
    print(json.dumps(out))


if __name__ == "__main__":
    main()
