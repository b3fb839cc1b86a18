"""The disk footprint of each paper spec (`sweeps/paper/`), without its data or any training.

For each spec: its trials, its unique stages of each kind and the bytes of each stage's stored model
(`fairsweep.sweep.footprint`: every model built as the stage stores it, sized as `torch.save` writes its
state dict; `tests/test_footprint.py` holds that against real trials' files), the stage store's total,
and what a copy of every trial's final model in MLflow would add (`tracking.log_models: all`). The
stage ids are computed without the data (its content digest left out), which changes no count: trials
on one data configuration share one digest either way. `fairsweep validate` prints the same line for
any spec whose data is here.

    python benchmarks/disk_footprint.py [SPEC ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fairsweep.data.utkface import GENDERS, RACES
from fairsweep.spec import load_spec
from fairsweep.sweep.footprint import human_bytes, plan_footprint
from fairsweep.sweep.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]


def inputs(spec) -> tuple[tuple[int, ...], int]:
    """One sample's shape and the classes, as the published datasets give them (CIFAR-10 and SVHN: 32×32
    colour images of 10 classes; UTKFace: faces at `data.image_size`, 5 races, 2 genders or the age bins)."""
    data = spec.data
    if data.dataset == "utkface":
        classes = {"race": len(RACES), "gender": len(GENDERS), "age": len(data.age_bins)}[data.target]
        return (3, data.image_size, data.image_size), classes
    if data.dataset in ("cifar10", "svhn"):
        return (3, 32, 32), 10
    raise SystemExit(f"{spec.name}: no known input shape for dataset {data.dataset}; run `fairsweep validate` on it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", type=Path, help="spec files (default: every sweeps/paper/*.yaml)")
    specs = parser.parse_args().specs or sorted((ROOT / "sweeps" / "paper").glob("*.yaml"))
    print(f"{'spec':<28} {'trials':>6} {'base':>5} {'lin.':>5} {'fine.':>5} {'stages':>9} {'+MLflow':>9}  per stage")
    for path in specs:
        spec = load_spec(path, ["data.root=/unread"])  # the files are never read here
        plan = make_plan(spec, digests=lambda data: "not-loaded")
        footprint = plan_footprint(plan, inputs)
        counts = [len(footprint.stages.get(kind, [])) for kind in ("base", "linearize", "finetune")]
        each = ", ".join(f"{kind} {human_bytes(min(s))}–{human_bytes(max(s))}" if min(s) != max(s)
                         else f"{kind} {human_bytes(s[0])}" for kind, s in footprint.stages.items())
        print(f"{spec.name:<28} {len(plan.trials):>6} {counts[0]:>5} {counts[1]:>5} {counts[2]:>5} "
              f"{human_bytes(footprint.total):>9} {human_bytes(sum(footprint.finals)):>9}  {each}")


if __name__ == "__main__":
    main()
