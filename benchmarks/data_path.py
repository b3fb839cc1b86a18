"""fairsweep's image data path against a torchvision `Dataset` + `DataLoader` pipeline, per epoch.

Both feed CIFAR-sized batches (3×32×32 uint8 images, ResNet-18's input) with the same
augmentation — random crop with 4 px zero padding, random horizontal flip — and the same
normalisation:
- ours: the uint8 tensor held on the device, each batch an index slice augmented and normalised
  with tensor ops (`GroupedData.inputs`, what the training loop calls);
- baseline: the images as a torchvision-style dataset (HWC uint8 arrays, PIL per image, as
  `torchvision.datasets.CIFAR10` does) through `RandomCrop`, `RandomHorizontalFlip`, `ToTensor`,
  `Normalize` and a shuffling `DataLoader`, each batch moved to the device.
Prints samples per second of one epoch of the data alone (median over repeats) and the time of
one training epoch of a registered model fed by each, with the ratios, all measured in this run.
The images are random: the cost of the data path does not depend on what they show.

    python benchmarks/data_path.py [--samples 50000] [--batch-size 128] [--workers 0] [--device cpu]
                                   [--arch small_cnn] [--width 16] [--train-samples 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from fairsweep.data import GroupedData
from fairsweep.data.cifar10 import MEAN, STD
from fairsweep.data.pixels import Pixels
from fairsweep.models import create_model
from fairsweep.train.loop import train

NAMES = tuple(str(c) for c in range(10))


class ImageDataset(torch.utils.data.Dataset):
    """The torchvision way: one PIL image per sample through the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from torchvision import transforms

        self.images, self.labels = images, labels  # (N, 32, 32, 3) uint8, (N,) int64
        self.transform = transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours_batches(data: GroupedData, batch_size: int, generator: torch.Generator):
    for index in torch.randperm(len(data), generator=generator).to(data.y.device).split(batch_size):
        yield data.inputs(index, generator), data.y[index]


def baseline_batches(loader, device: torch.device):
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def time_epoch(batches, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for x, _ in batches:
        pass
    sync(device)
    return time.perf_counter() - start


def train_epoch_baseline(model, loader, device: torch.device) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    sync(device)
    start = time.perf_counter()
    for x, y in baseline_batches(loader, device):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


def train_epoch_ours(model, data: GroupedData, batch_size: int, device: torch.device) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def loss_fn(m, x, y, g):
        per_sample = F.cross_entropy(m(x), y, reduction="none")
        return per_sample.mean(), per_sample

    sync(device)
    start = time.perf_counter()
    train(model, data, loss_fn, opt, 1, batch_size, torch.Generator().manual_seed(0))
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000, help="images in the data-only epoch (CIFAR-10: 50,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arch", default="small_cnn", help="a registered architecture for the training epoch")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--train-samples", type=int, default=5_000, help="images in the training epoch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.samples, 32, 32, 3), dtype=np.uint8)  # HWC, as torchvision holds CIFAR
    labels = rng.integers(0, 10, args.samples).astype(np.int64)
    y = torch.from_numpy(labels)
    ours = GroupedData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), y, y.clone(), NAMES, NAMES,
                       Pixels.of(MEAN, STD, padding=4, flip=True)).to(device)

    def loader(n: int):
        return torch.utils.data.DataLoader(ImageDataset(images[:n], labels[:n]), batch_size=args.batch_size,
                                           shuffle=True, num_workers=args.workers,
                                           pin_memory=device.type == "cuda", persistent_workers=False)

    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    for r in range(args.repeats + 1):  # round 0 warms up and is not counted
        for name in (("ours", "baseline") if r % 2 else ("baseline", "ours")):  # alternate, so drift hits both
            batches = (ours_batches(ours, args.batch_size, torch.Generator().manual_seed(r)) if name == "ours"
                       else baseline_batches(loader(args.samples), device))
            seconds = time_epoch(batches, device)
            if r > 0:
                times[name].append(seconds)
    data_ours, data_base = statistics.median(times["ours"]), statistics.median(times["baseline"])

    n = min(args.train_samples, args.samples)
    torch.manual_seed(0)
    model0 = create_model(args.arch, num_classes=10, in_channels=3, width=args.width).to(device)
    state = {k: v.clone() for k, v in model0.state_dict().items()}
    train_epoch_ours(model0, ours.subset(torch.arange(min(n, 4 * args.batch_size), device=device)), args.batch_size,
                     device)  # warm-up
    model0.load_state_dict(state)
    train_ours = train_epoch_ours(model0, ours.subset(torch.arange(n, device=device)), args.batch_size, device)
    model0.load_state_dict(state)
    train_base = train_epoch_baseline(model0, loader(n), device)

    print(f"{args.samples} images 3x32x32, batch {args.batch_size}, crop(4 px padding) + flip + normalise, "
          f"{args.device}, {args.threads} thread(s), DataLoader workers {args.workers}, median of {args.repeats}")
    print(f"  data alone, one epoch:  ours {data_ours:7.2f} s = {args.samples / data_ours:9.0f} samples/s   "
          f"torchvision {data_base:7.2f} s = {args.samples / data_base:9.0f} samples/s   "
          f"ours {data_base / data_ours:5.1f}x faster")
    print(f"  training epoch of {args.arch} (width {args.width}) on {n} images:  ours {train_ours:7.2f} s   "
          f"torchvision {train_base:7.2f} s   ours {train_base / train_ours:5.2f}x faster")


if __name__ == "__main__":
    main()
