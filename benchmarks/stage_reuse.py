"""Stage reuse: a sweep's trials through one shared stage store against every trial running its whole
pipeline (base, linearization, finetuning, base diagnostics) on a store of its own.

Both run `run_trial` in this process, one trial after another, with one torch thread. Prints the
stages executed with reuse and the sweep's unique stages (they must be equal), the stages executed
without reuse, the wall time of each and the saving, all measured in this run.

    python benchmarks/stage_reuse.py [--repeats 1] [--set finetune.mu=[0,0.01] ...]
"""

from __future__ import annotations


import torch

from fairsweep.sweep.plan import STAGE_KINDS, make_plan
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial
from sweep_setup import ablation_spec, fresh_storage, load_average, sweep_arguments
from timing import interleaved_medians


def main() -> None:
    args = sweep_arguments(__doc__)
    spec = ablation_spec(["seed=[0]", "linearize.budget=[0.03,0.1]", "finetune.mu=[0,0.005,0.01]",
                          "diagnostics.hessian=false", "diagnostics.bound=false", *args.overrides])
    plan = make_plan(spec)
    torch.set_num_threads(1)
    executed: dict[str, dict[str, int]] = {}

    def run(shared: bool):
        def trials(_round: int) -> None:
            store = StageStore(fresh_storage("reuse"))
            counts = dict.fromkeys(STAGE_KINDS, 0)
            for trial in plan.trials:
                record = run_trial(trial, store if shared else StageStore(fresh_storage("whole")))
                for kind, trained in record.trained.items():
                    counts[kind] += int(trained)
            executed["with reuse" if shared else "without reuse"] = counts
        return trials

    times = interleaved_medians({"with reuse": run(True), "without reuse": run(False)}, args.repeats)
    unique = {kind: len(plan.unique_stages(kind)) for kind in STAGE_KINDS}
    print(f"{len(plan.trials)} trials ({spec.sweep.grid}), 1 torch thread, median of {args.repeats} after a "
          f"warm-up round; {load_average()}")
    print(f"  unique stages                     {unique}  ({sum(unique.values())})")
    for name, seconds in times.items():
        counts = executed[name]
        print(f"  executed stages {name:<17} {counts}  ({sum(counts.values())})   {seconds:7.1f} s")
    saving = 1 - times["with reuse"] / times["without reuse"]
    print(f"  wall-time saving of reuse  {saving:.0%}  ({times['without reuse'] / times['with reuse']:.2f}x faster)")
    assert executed["with reuse"] == unique, "a stage was executed twice (or not at all)"


if __name__ == "__main__":
    main()
