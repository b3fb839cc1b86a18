"""Datasets that ship with fairsweep and need no download."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairsweep.data import GroupedData, Loaded, register_dataset

if TYPE_CHECKING:
    from fairsweep.data.cache import DataCache
    from fairsweep.spec import DataConfig


@register_dataset(
    "digits",
    description="scikit-learn's bundled 8x8 handwritten digits (1,797 images); group = class",
    targets=("class",),
    groups=("class",),
)
def load_digits(cfg: DataConfig, cache: DataCache | None) -> Loaded:
    import torch

    def read() -> dict[str, torch.Tensor]:
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        return {"images": torch.as_tensor(bunch.images).to(torch.uint8),  # values 0..16, exact in uint8
                "target": torch.as_tensor(bunch.target, dtype=torch.int64)}

    if cache is None:
        digits = read()
    else:  # read from the data cache, so a trial's worker need not import scikit-learn
        from importlib.metadata import version

        digits = cache.memo("digits", {"scikit-learn": version("scikit-learn")}, read)
    x = digits["images"].to(torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    y = digits["target"]
    names = tuple(str(c) for c in range(10))
    return Loaded(GroupedData(x=x, y=y, g=y.clone(), class_names=names, group_names=names))


@register_dataset(
    "toy2d",
    description="the paper's Figure 2 setting: 2-D points, a non-linear boundary, a small minority class",
    targets=("class",),
    groups=("class",),
)
def load_toy2d(cfg: DataConfig, cache: DataCache | None) -> Loaded:
    """2,000 points in [-1, 1]²; the minority class lies above a sinusoidal boundary (~14 % of points)."""
    import math

    import torch

    gen = torch.Generator().manual_seed(2024)  # the dataset itself is fixed; splits vary by seed
    x = torch.rand(2000, 2, generator=gen) * 2 - 1  # (N, 2)
    boundary = 0.72 + 0.2 * torch.sin(math.pi * 1.5 * x[:, 0])
    y = (x[:, 1] > boundary).to(torch.int64)
    names = ("majority", "minority")
    return Loaded(GroupedData(x=x, y=y, g=y.clone(), class_names=names, group_names=names))
