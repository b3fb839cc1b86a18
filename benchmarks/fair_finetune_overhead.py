"""Cost of the fairness-aware finetuning (Algorithm 1) against plain KD, per training epoch.

Three ways to run one epoch of KD finetuning of the embedded sweep's model on `digits`:
- plain KD (what µ = 0 runs);
- Algorithm 1 with every multiplier non-zero: per-group losses from the one forward pass by
  segment sums (fairsweep's way: the `Algorithm1` mitigation that the finetune stage runs);
- Algorithm 1 the naive way: one extra forward per group present in the batch.
Prints the median epoch time of each over repeats and the ratios against plain KD, all measured
in this run. CPU by default; `--device cuda` where a GPU is present.

    python benchmarks/fair_finetune_overhead.py [--repeats 7] [--width 16] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from fairsweep.data import load_splits
from fairsweep.models import create_model
from fairsweep.spec import DataConfig, Imbalance
from fairsweep.train.losses import kd_per_sample
from fairsweep.train.mitigation import Algorithm1

T = 4.0


def epoch(student, teacher, data, batch_size, generator, mode: str, algorithm1: Algorithm1) -> None:
    multipliers = algorithm1.multipliers
    opt = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    student.train()
    for index in torch.randperm(len(data), generator=generator).to(data.y.device).split(batch_size):
        x, y, g = data.x[index], data.y[index], data.g[index]
        with torch.no_grad():
            t = teacher(x)
        if mode == "plain":
            objective = kd_per_sample(student(x), t, y, T).mean()
        elif mode == "segment":
            objective = algorithm1.objective(kd_per_sample(student(x), t, y, T), g)
        else:  # naive: the batch loss, then each group's loss from its own forward pass
            overall = kd_per_sample(student(x), t, y, T).mean()
            penalty = 0.0
            for a in torch.unique(g).tolist():
                members = g == a
                group_loss = kd_per_sample(student(x[members]), t[members], y[members], T).mean()
                penalty = penalty + multipliers[a] * (overall - group_loss).abs()
            objective = overall + penalty
        opt.zero_grad(set_to_none=True)
        objective.backward()
        opt.step()
    if data.y.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = DataConfig(dataset="digits", imbalance=Imbalance(minority_classes=[5, 6, 7, 8, 9], minority_keep=0.25))
    data = load_splits(cfg, seed=0).train.to(device)
    torch.manual_seed(0)
    teacher = create_model("small_cnn", 10, 1, width=args.width).to(device).eval()
    student0 = create_model("small_cnn", 10, 1, width=args.width).to(device)
    algorithm1 = Algorithm1(0.0, data.group_names, device)
    algorithm1.multipliers.fill_(0.05)

    times: dict[str, list[float]] = {"plain": [], "segment": [], "naive": []}
    for r in range(args.repeats + 1):  # the first round warms up and is not counted
        modes = list(times)
        for mode in modes[r % 3:] + modes[:r % 3]:  # interleaved and rotated, so load drift hits all alike
            student = copy.deepcopy(student0)
            gen = torch.Generator().manual_seed(r)
            start = time.perf_counter()
            epoch(student, teacher, data, args.batch_size, gen, mode, algorithm1)
            if r > 0:
                times[mode].append(time.perf_counter() - start)
    base = statistics.median(times["plain"])
    print(f"digits train split: {len(data)} samples, {len(data.group_names)} groups, batch {args.batch_size}, "
          f"small_cnn width {args.width}, {args.device}, {args.threads} thread(s), median of {args.repeats}")
    for mode, label in (("plain", "plain KD epoch"), ("segment", "Algorithm 1, segment sums (fairsweep)"),
                        ("naive", "Algorithm 1, one forward per group")):
        median = statistics.median(times[mode])
        print(f"  {label:<40} {median * 1000:8.1f} ms   ratio to plain KD {median / base:5.2f}x")


if __name__ == "__main__":
    main()
