"""Cost of one SNL epoch against one plain training epoch of the same model.

- `plain`: one epoch of cross-entropy training with SGD (the base stage's recipe), no teacher;
- `KD`: one epoch of KD finetuning from a teacher (for reference: SNL distils too);
- `SNL`: one epoch of fairsweep's SNL itself (`linearize.snl.snl` with a budget it meets after one
  epoch): per-unit gates, teacher forward, CE + KD + λ·‖α‖₁, Adam on weights and gates.
Inputs are random tensors of the architecture's input shape (the timing does not depend on the
data). Prints the median epoch time over repeats and the ratios against `plain`, all measured in
this run.

    python benchmarks/snl_epoch_cost.py [--arch resnet18 --width 8] [--samples 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from fairsweep.data import GroupedData, Splits
from fairsweep.linearize import count_relus
from fairsweep.linearize.snl import snl
from fairsweep.models import create_model
from fairsweep.spec import validate_spec
from fairsweep.train.loop import train
from fairsweep.train.losses import kd_per_sample
from timing import interleaved_medians


def plain_epoch(model, teacher, data, spec, generator) -> None:
    def loss_fn(m, x, y, g):
        per_sample = F.cross_entropy(m(x), y, reduction="none")
        return per_sample.mean(), per_sample

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    train(model, data.train, loss_fn, optimizer, 1, spec.data.batch_size, generator)


def kd_epoch(model, teacher, data, spec, generator) -> None:
    def loss_fn(m, x, y, g):
        with torch.no_grad():
            teacher_logits = teacher(x)
        per_sample = kd_per_sample(m(x), teacher_logits, y, 4.0)
        return per_sample.mean(), per_sample

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    train(model, data.train, loss_fn, optimizer, 1, spec.data.batch_size, generator)


def snl_epoch(model, teacher, data, spec, generator) -> None:
    total = count_relus(model, tuple(data.train.x.shape[1:])).total
    out = snl(model, data, spec, total, generator)  # every gate starts live: the budget is met after one epoch
    assert len(out.history) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = validate_spec({"name": "bench", "model": {"arch": args.arch, "width": args.width},
                          "data": {"batch_size": args.batch_size}})
    gen = torch.Generator().manual_seed(0)
    shape = (3, args.input_size, args.input_size)
    x = torch.randn(args.samples, *shape, generator=gen)
    y = torch.randint(0, 10, (args.samples,), generator=gen)
    train_data = GroupedData(x, y, y.clone(), tuple(map(str, range(10))), tuple(map(str, range(10))))
    data = Splits(train_data, train_data, train_data)
    torch.manual_seed(0)
    teacher = create_model(args.arch, 10, 3, width=args.width).eval()
    student0 = create_model(args.arch, 10, 3, width=args.width)

    epochs = {"plain": plain_epoch, "KD": kd_epoch, "SNL": snl_epoch}

    def run(epoch):
        return lambda r: epoch(copy.deepcopy(student0), teacher, data, spec, torch.Generator().manual_seed(r))

    medians = interleaved_medians({name: run(epoch) for name, epoch in epochs.items()}, args.repeats)
    base = medians["plain"]
    print(f"{args.arch} width {args.width}, {args.samples} samples of {'×'.join(map(str, shape))}, batch "
          f"{args.batch_size}, CPU, {args.threads} thread(s), median of {args.repeats}")
    for name, label in (("plain", "plain training epoch (CE, SGD)"), ("KD", "KD epoch (teacher forward + CE + KL)"),
                        ("SNL", "SNL epoch (gates, KD, λ‖α‖₁, Adam)")):
        median = medians[name]
        print(f"  {label:<42} {median * 1000:8.1f} ms   ratio to plain {median / base:5.2f}x")


if __name__ == "__main__":
    main()
