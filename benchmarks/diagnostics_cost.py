"""Cost of the paper's per-group diagnostics against one evaluation pass of the same data.

- evaluation pass: the trial's accuracy by group (`evaluate`: a forward pass without gradients);
- diagnostics for all groups, Hessian excluded: loss, margin and gradient norm of every group
  (`diagnose`: one forward and one backward per group over that group's samples);
- the Hessian's top eigenvalue: the cost of one power iteration (one Hessian-vector product) per
  group, reported separately.
Prints the median time of each over repeats and the ratio against the evaluation pass, all measured
in this run. Default: the embedded sweep's model and data (`small_cnn` on `digits`, every sample);
`--input-size 32 --samples 2048` runs the same on random 3×32×32 inputs.

    python benchmarks/diagnostics_cost.py [--repeats 7] [--arch small_cnn] [--width 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fairsweep.data import GroupedData, load_splits
from fairsweep.metrics.diagnostics import diagnose, group_indices, hessian_vector_product, power_iteration
from fairsweep.metrics.groups import evaluate
from fairsweep.models import create_model
from fairsweep.spec import DataConfig, DiagnosticsConfig


def _data(args, device) -> GroupedData:
    if args.input_size is None:
        cfg = DataConfig(dataset="digits")
        splits = load_splits(cfg, seed=0)
        data = splits.train
        for part in (splits.val, splits.test):  # every sample: a larger pass to time
            data = GroupedData(torch.cat([data.x, part.x]), torch.cat([data.y, part.y]), torch.cat([data.g, part.g]),
                               data.class_names, data.group_names)
        return data.to(device)
    gen = torch.Generator().manual_seed(0)
    n, names = args.samples, tuple(str(c) for c in range(10))
    y = torch.randint(0, 10, (n,), generator=gen)
    x = torch.randn(n, 3, args.input_size, args.input_size, generator=gen)
    return GroupedData(x, y, y.clone(), names, names).to(device)


def _timed(fn, device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=None, help="random 3xNxN inputs instead of digits")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--hessian-samples", type=int, default=256, help="per group, as max_samples_per_group")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = _data(args, device)
    torch.manual_seed(0)
    model = create_model(args.arch, len(data.class_names), data.x.shape[1], width=args.width).to(device).eval()
    cfg = DiagnosticsConfig(hessian=False, bound=False, max_samples_per_group=None)

    times: dict[str, list[float]] = {"evaluation pass": [], "diagnostics, Hessian excluded": []}
    runs = {"evaluation pass": lambda: evaluate(model, data), "diagnostics, Hessian excluded": lambda: diagnose(model, data, cfg)}
    for r in range(args.repeats + 1):  # the first round warms up and is not counted
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):  # alternate, so load drift hits both
            elapsed = _timed(runs[name], device)
            if r > 0:
                times[name].append(elapsed)

    # one power iteration (one Hessian-vector product) per group, on up to --hessian-samples samples each
    params = [p for p in model.parameters() if p.requires_grad]
    per_iteration = []
    for idx in group_indices(data.g, len(data.group_names), args.hessian_samples):
        if len(idx) == 0:
            continue
        hvp = hessian_vector_product(model, params, data.inputs(idx), data.y[idx])
        gen = torch.Generator().manual_seed(0)
        power_iteration(hvp, params, 1, 0.0, gen)  # warm-up
        iters = 5
        per_iteration.append(_timed(lambda: power_iteration(hvp, params, iters, 0.0, gen), device) / iters)

    base = statistics.median(times["evaluation pass"])
    print(f"{args.arch} (width {args.width}) on {len(data)} samples of shape {tuple(data.x.shape[1:])}, "
          f"{len(data.group_names)} groups, device {device}, {args.threads} thread(s), median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<32} {median * 1e3:9.1f} ms   {median / base:5.2f}x the evaluation pass")
    print(f"  Hessian, one power iteration:     {statistics.mean(per_iteration) * 1e3:9.1f} ms per group on up to "
          f"{args.hessian_samples} samples ({statistics.mean(per_iteration) / base:5.2f}x the evaluation pass)")


if __name__ == "__main__":
    main()
