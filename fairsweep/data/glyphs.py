"""`glyphs`: an embedded image dataset with the statistical power the paper's effects need.

Procedurally drawn 3×16×16 images of six shapes (disk, square, triangle, cross, ring, bar), each at
a random position, size and rotation, in random colours, with pixel noise. Every image has two
attributes:

- `shape`, the target (6 classes, equally common);
- `style`, a group attribute: 90 % are `bright` (a bright shape on a dark background), 10 % are
  `dark` (a dark shape on a bright background, the opposite contrast). A ReLU network serves the
  dark minority with features of its own (a ReLU passes one sign of an edge; the other contrast
  needs other units), so serving it takes capacity — the setting in which the paper finds that
  linearization costs the minority most (target ≠ group, as UTKFace with age or race as the group).

`data.group: shape` gives the paper's other setting, group = class (with `data.imbalance` to make
some classes rare, as the paper does with CIFAR-10).

The images are a pure function of a fixed generator seed: drawn once (about a second), cached in
the data cache like `digits`, the same on every machine. Splits vary with the trial's seed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fairsweep.data import GroupedData, Loaded, register_dataset

if TYPE_CHECKING:
    import torch

    from fairsweep.data.cache import DataCache
    from fairsweep.spec import DataConfig

SHAPES = ("disk", "square", "triangle", "cross", "ring", "bar")
STYLES = ("bright", "dark")
SAMPLES = 12_000
SIZE = 16  # pixels per side
MINORITY_SHARE = 0.1  # of the images drawn dark on bright
NOISE = 0.06  # std of the Gaussian pixel noise, on the 0..1 scale
GENERATOR_SEED = 2026
FORMAT = 1  # bump when the drawing changes, so cached copies are redrawn
# Everything the drawing depends on: the data cache's key (a change redraws the images)
DRAWING = {"format": FORMAT, "samples": SAMPLES, "size": SIZE, "minority_share": MINORITY_SHARE, "noise": NOISE, "seed": GENERATOR_SEED}
# Per-channel mean and std of all the images' pixels on the 0..1 scale (measured once; see the test).
MEAN, STD = (0.3155, 0.3157, 0.3156), (0.2958, 0.2965, 0.2962)


@register_dataset(
    "glyphs",
    description=f"{SAMPLES:,} procedurally drawn 3x16x16 images of 6 shapes; group = style (10 % dark on "
                "bright, the opposite contrast) or shape",
    targets=("shape",),
    groups=("style", "shape"),
)
def load_glyphs(cfg: DataConfig, cache: DataCache | None) -> Loaded:
    from fairsweep.data.pixels import Pixels

    drawn = draw() if cache is None else cache.memo("glyphs", DRAWING, draw)
    group = drawn["style"] if cfg.group == "style" else drawn["shape"]
    group_names = STYLES if cfg.group == "style" else SHAPES
    # a flip keeps every shape what it is; so does a crop with 2 px padding (the shape stays inside)
    pixels = Pixels.of(MEAN, STD, padding=2 if cfg.augment else 0, flip=cfg.augment)
    return Loaded(GroupedData(drawn["images"], drawn["shape"], group.clone(), SHAPES, group_names, pixels))


def draw(n: int = SAMPLES, seed: int = GENERATOR_SEED) -> dict[str, torch.Tensor]:
    """`images` (n, 3, SIZE, SIZE) uint8, `shape` (n,) and `style` (n,) int64, from generator `seed`."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=gen)

    shape = torch.randint(0, len(SHAPES), (n,), generator=gen)
    dark = torch.rand(n, generator=gen) < MINORITY_SHARE
    # each image's frame: the shape's own coordinates (u, v) at every pixel, (n, SIZE, SIZE)
    axis = (torch.arange(SIZE) + 0.5) / SIZE * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    scale, angle = uniform(0.45, 0.75, n, 1, 1), uniform(0, 2 * math.pi, n, 1, 1)
    dx, dy = xx - uniform(-0.3, 0.3, n, 1, 1), yy - uniform(-0.3, 0.3, n, 1, 1)
    u = (angle.cos() * dx + angle.sin() * dy) / scale
    v = (angle.cos() * dy - angle.sin() * dx) / scale
    inside = glyph_masks(u, v)[torch.arange(n), shape].float()  # (n, SIZE, SIZE)
    # bright: a bright shape on a dark background, in random colours; dark: the same, inverted
    foreground, background = uniform(0.5, 1.0, n, 3), uniform(0.0, 0.3, n, 3)
    foreground = torch.where(dark[:, None], 1 - foreground, foreground)
    background = torch.where(dark[:, None], 1 - background, background)
    images = background[:, :, None, None] + (foreground - background)[:, :, None, None] * inside[:, None]
    images = images + NOISE * torch.randn(n, 3, SIZE, SIZE, generator=gen)
    return {"images": (images.clamp(0, 1) * 255).round().to(torch.uint8), "shape": shape,
            "style": dark.to(torch.int64)}


def glyph_masks(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether each point (u, v) of the shape's own frame lies inside each shape: (n, H, W) -> (n, 6, H, W)."""
    import torch

    r = (u * u + v * v).sqrt()
    return torch.stack([
        r < 1.0,  # disk
        (u.abs() < 0.8) & (v.abs() < 0.8),  # square
        (v > -0.6) & (v < 0.9 - 1.6 * u.abs()),  # triangle
        ((u.abs() < 0.3) & (v.abs() < 1.0)) | ((v.abs() < 0.3) & (u.abs() < 1.0)),  # cross
        (r < 1.0) & (r > 0.55),  # ring
        (u.abs() < 1.0) & (v.abs() < 0.3),  # bar
    ], dim=1)
