"""Cost of a fully linearized stage: all-zero masks against the same ReLUs removed structurally.

ResNet-18 (CIFAR variant, 32×32 inputs) in four forms, all with the same weights:
- `relu`: every ReLU live;
- `masked zero`: every site of one stage carries a frozen all-zero mask (what SNL or DeepReDuce
  leave behind when they linearize the whole stage);
- `removed`: the same sites replaced by `nn.Identity` (the structural baseline);
- `masked half`: the same sites with a random half of their units live (the per-element path),
  for reference.
Prints the median time of a forward pass (eval) and of a training step (forward, backward, SGD)
over repeats, and the ratio of each form to `removed`, all measured in this run.

    python benchmarks/linearized_site_cost.py [--width 32] [--batch-size 64] [--stage stage1] [--repeats 10]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from fairsweep.linearize import count_relus
from fairsweep.models import create_model, relu_sites, stage_of
from timing import interleaved_medians


def stage_sites(model: nn.Module, stage: str) -> dict:
    return {name: site for name, site in relu_sites(model).items() if stage_of(name) == stage}


def variants(width: int, stage: str, shape: tuple[int, ...]) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    base = create_model("resnet18", 10, 3, width=width)
    count_relus(base, shape)  # unit shapes for the masks
    zero, half, removed = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    for name, site in stage_sites(zero, stage).items():
        site.set_mask(torch.zeros(site.unit_shape))
    for name, site in stage_sites(half, stage).items():
        site.set_mask((torch.rand(site.unit_shape) < 0.5).float())
    for name in stage_sites(removed, stage):
        parent, _, leaf = name.rpartition(".")
        setattr(removed.get_submodule(parent), leaf, nn.Identity())
    return {"removed": removed, "masked zero": zero, "relu": base, "masked half": half}


def forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    with torch.no_grad():
        model.eval()(x)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32, help="ResNet-18's first-stage channels (64 in the paper)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--stage", default="stage1")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = (3, 32, 32)
    models = variants(args.width, args.stage, shape)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(args.batch_size, *shape, generator=gen), torch.randint(0, 10, (args.batch_size,), generator=gen)
    live = {name: count_relus(m, shape).total for name, m in models.items()}
    print(f"resnet18 width {args.width}, {args.stage} linearized, batch {args.batch_size} × 3×32×32, CPU, "
          f"{args.threads} thread(s), median of {args.repeats}")
    for label, work in (("forward (eval)", forward), ("training step", train_step)):
        medians = interleaved_medians({name: lambda r, m=m: work(m, x, y) for name, m in models.items()},
                                      args.repeats)
        base = medians["removed"]
        print(f"  {label}")
        for name, median in medians.items():
            print(f"    {name:<12} {live[name]:>8,} ReLUs {median * 1000:8.1f} ms   ratio to removed {median / base:5.2f}x")


if __name__ == "__main__":
    main()
