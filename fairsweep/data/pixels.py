"""From uint8 images to model inputs, a whole batch at a time (after airbench).

Images stay uint8 in memory (on the GPU when training on one: a quarter of float32's size).
Each batch is augmented with tensor ops — a random crop of the zero-padded image and a random
horizontal flip, drawn from the training loop's generator so runs are deterministic — then
converted to float and normalised with the dataset's published per-channel mean and std.
Evaluation gets the same normalisation without augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Pixels:
    scale: torch.Tensor  # (1, C, 1, 1): 1 / (255 · std)
    shift: torch.Tensor  # (1, C, 1, 1): −mean / std
    padding: int = 0  # random crops are taken from the image zero-padded by this many pixels
    flip: bool = False  # random horizontal flips

    @classmethod
    def of(cls, mean: tuple[float, ...], std: tuple[float, ...], padding: int = 0, flip: bool = False) -> Pixels:
        """`mean` and `std` per channel, on the 0..1 scale, as datasets publish them."""
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        return cls(1.0 / (255.0 * std_t), -mean_t / std_t, padding, flip)

    def to(self, device: torch.device | str) -> Pixels:
        return Pixels(self.scale.to(device), self.shift.to(device), self.padding, self.flip)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, H, W) uint8 -> (B, C, H, W) float32, normalised; augmented if `generator` is given."""
        if generator is not None and (self.padding or self.flip):
            shifts, flips = draw_augmentation(len(images), self.padding, self.flip, generator)
            images = crop_and_flip(images, shifts.to(images.device), flips.to(images.device), self.padding)
        return images.float() * self.scale + self.shift


def draw_augmentation(n: int, padding: int, flip: bool, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: (n, 2) int64 crop offsets (row, column) in [0, 2·padding], (n,) bool flips."""
    shifts = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n,), generator=generator).bool() if flip else torch.zeros(n, dtype=torch.bool)
    return shifts, flips


def crop_and_flip(images: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): image b cropped from its zero-padded self at `shifts[b]`, then
    mirrored left-right where `flips[b]`. Two gathers over the batch (rows, then columns with the flip
    folded in), their indices broadcast rather than materialised; no per-image Python."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    rows = shifts[:, :1] + torch.arange(h, device=images.device)  # (B, H) source rows
    cropped_rows = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    cols = torch.arange(w, device=images.device).expand(b, w)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + shifts[:, 1:]  # (B, W) source columns
    return cropped_rows.gather(3, cols[:, None, None, :].expand(b, c, h, w))
