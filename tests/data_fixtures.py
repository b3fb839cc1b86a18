"""Tiny datasets written in each publisher's format, with what loading them must give.

Every image is distinct (random pixels, or a distinct solid colour for JPEGs, which are lossy), so
splits can be checked for disjointness by content. Sizes are the smallest at which the paper's
settings (imbalance, 80/20, `min_group_size` 5) leave every group in every split.
"""

from __future__ import annotations

import csv
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Expected:
    """What the loader must return for the fixture, in its sample order."""

    x: torch.Tensor  # (N, 3, H, W) uint8
    y: torch.Tensor
    g: torch.Tensor
    class_names: tuple[str, ...]
    group_names: tuple[str, ...]
    test: Expected | None = None  # the publisher's test set
    pixel_tolerance: int = 0  # JPEG is lossy
    data: dict = field(default_factory=dict)  # the spec's `data` section that loads it
    source: str = ""  # one of the files it is decoded from, relative to the root


def write_cifar10(root: Path, train_per_class: int = 500, test_per_class: int = 50) -> Expected:
    """`cifar-10-batches-py/` as published: five training batches, a test batch and batches.meta,
    pickled dicts with bytes keys, `data` (N, 3072) uint8 and `labels` a list of ints."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(0)

    def batch(labels: list[int], name: str) -> tuple[np.ndarray, np.ndarray]:
        data = gen.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        content = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                   b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
        return data, np.array(labels)

    train_labels = gen.permutation(np.repeat(np.arange(10), train_per_class)).tolist()
    per_batch = len(train_labels) // 5
    parts = [batch(train_labels[i * per_batch:(i + 1) * per_batch], f"data_batch_{i + 1}") for i in range(5)]
    test_data, test_y = batch(gen.permutation(np.repeat(np.arange(10), test_per_class)).tolist(), "test_batch")
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))

    def expected(data: np.ndarray, y: np.ndarray) -> Expected:
        x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # rows are 1024 R, then G, then B
        labels = torch.from_numpy(y).long()
        return Expected(x, labels, labels, tuple(CIFAR_CLASSES), tuple(CIFAR_CLASSES))

    train = expected(np.concatenate([d for d, _ in parts]), np.concatenate([y for _, y in parts]))
    train.test = expected(test_data, test_y)
    train.data = {"dataset": "cifar10", "root": str(root)}
    train.source = "cifar-10-batches-py/data_batch_3"
    return train


def write_svhn(root: Path) -> Expected:
    """`train_32x32.mat` / `test_32x32.mat`: X (32, 32, 3, N) uint8, y (N, 1) uint8 labels 1..10 (10 = 0)."""
    import scipy.io

    root.mkdir(parents=True)
    gen = np.random.default_rng(1)
    digits = np.arange(10)

    def write(name: str, counts: np.ndarray) -> Expected:
        y = gen.permutation(np.repeat(digits, counts))
        x = gen.integers(0, 256, (len(y), 3, 32, 32), dtype=np.uint8)  # (N, C, H, W)
        labels = np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(root / name, {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)), "y": labels})
        names = tuple(str(d) for d in digits)
        return Expected(torch.from_numpy(x), torch.from_numpy(y).long(), torch.from_numpy(y).long(), names, names)

    train = write("train_32x32.mat", 60 + 3 * digits)  # naturally imbalanced: 60 .. 87
    train.test = write("test_32x32.mat", 8 + digits)
    train.data = {"dataset": "svhn", "root": str(root)}
    train.source = "test_32x32.mat"
    return train


UTK_AGES = {0: 5, 1: 15, 2: 30, 3: 70}  # one age per default bin: 2-12, 13-17, 18-64, 65+
# three names from the published archive that lack a field, and one that is not a face at all
UTK_MALFORMED = ["39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109150557335.jpg.chip.jpg",
                 "61_3_20170109150557335.jpg.chip.jpg", "notes.jpg"]


def utk_colour(i: int) -> tuple[int, int, int]:
    """A solid colour per face, 8 levels apart, so faces stay distinct after JPEG's loss."""
    return (8 * (i % 32) + 4, 8 * ((i // 32) % 32) + 4, 128)


def write_utkface(root: Path, per_cell: int = 7, size: int = 40) -> Expected:
    """`UTKFace/[age]_[gender]_[race]_[date].jpg.chip.jpg`, `per_cell` faces per age bin × gender × race,
    plus two babies (ages 0 and 1, left out when age is used) and the malformed names above.
    Expected: target age (paper bins), group race, at 32 × 32."""
    from PIL import Image

    folder = root / "UTKFace"
    folder.mkdir(parents=True)
    faces = []  # (name, age bin, race, colour)
    i = 0
    for age_bin, age in UTK_AGES.items():
        for gender in (0, 1):
            for race in range(5):
                for k in range(per_cell):
                    name = f"{age}_{gender}_{race}_2017011{i:09d}.jpg.chip.jpg"
                    faces.append((name, age_bin, race, utk_colour(i)))
                    i += 1
    for age in (0, 1):
        faces.append((f"{age}_0_0_2017011{i:09d}.jpg.chip.jpg", -1, 0, utk_colour(i)))
        i += 1
    for name, _, _, colour in faces:
        Image.new("RGB", (size, size), colour).save(folder / name, quality=95)
    for name in UTK_MALFORMED:
        Image.new("RGB", (size, size), (0, 0, 0)).save(folder / name)
    kept = sorted((f for f in faces if f[1] >= 0), key=lambda f: f[0])  # the loader reads names in order
    x = torch.tensor([f[3] for f in kept], dtype=torch.uint8)[:, :, None, None].expand(-1, 3, 32, 32)
    expected = Expected(x.contiguous(), torch.tensor([f[1] for f in kept]), torch.tensor([f[2] for f in kept]),
                        ("2-12", "13-17", "18-64", "65+"), ("white", "black", "asian", "indian", "other"),
                        pixel_tolerance=4)
    expected.data = {"dataset": "utkface", "root": str(root), "target": "age", "group": "race"}
    expected.source = f"UTKFace/{kept[7][0]}"
    return expected


def write_imagefolder_csv(root: Path, per_cell: int = 20, size: int = 12) -> Expected:
    """`labels.csv` (file, diagnosis, site columns) beside PNGs in `img/`: 3 classes × 2 groups."""
    from PIL import Image

    (root / "img").mkdir(parents=True)
    gen = np.random.default_rng(2)
    classes, groups = ("benign", "malignant", "unknown"), ("clinic", "hospital")
    rows, images, ys, gs = [], [], [], []
    for c, target in enumerate(classes):
        for g, group in enumerate(groups):
            for k in range(per_cell):
                pixels = gen.integers(0, 256, (size, size, 3), dtype=np.uint8)
                name = f"img/{target}_{group}_{k}.png"
                Image.fromarray(pixels).save(root / name)
                rows.append({"file": name, "diagnosis": target, "site": group})
                images.append(pixels)
                ys.append(c)
                gs.append(g)
    order = gen.permutation(len(rows))  # rows in no particular order
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "diagnosis", "site"])
        writer.writeheader()
        writer.writerows(rows[i] for i in order)
    x = torch.from_numpy(np.stack([images[i] for i in order])).permute(0, 3, 1, 2).contiguous()
    expected = Expected(x, torch.tensor(ys)[order], torch.tensor(gs)[order], classes, groups)
    expected.data = {"dataset": "imagefolder_csv", "root": str(root), "image_size": size,
                     "csv": {"target_column": "diagnosis", "group_column": "site", "groups": list(groups)}}
    expected.source = rows[order[0]]["file"]
    return expected
