"""Reading a dataset's files: a file that cannot be read is a `UserError` naming it, and images
are decoded on a thread pool (Pillow releases the GIL while it decodes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fairsweep import errors
from fairsweep.errors import UserError

if TYPE_CHECKING:
    import torch


@contextmanager
def reading(dataset: str, path: Path) -> Iterator[None]:
    """Any failure inside the block is about `path`: say which file, and why, without a traceback."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # a truncated JPEG, a bad pickle, a .mat that is not one: all the file's fault
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(errors.CORRUPT_FILE.format(name=dataset, path=path, reason=reason)) from None


def decode_images(dataset: str, paths: list[Path], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8: each image as RGB, resized (bilinear, antialiased) to size × size."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import torch

    with ThreadPoolExecutor() as pool:
        images = list(pool.map(lambda p: read_image(dataset, p, size), paths))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def read_image(dataset: str, path: Path, size: int):
    """(size, size, 3) uint8 array of one image file."""
    import numpy as np
    from PIL import Image

    with reading(dataset, path), Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size (much faster)
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
