"""Epoch checkpoints of a stage being trained, so that a killed trainer's stage resumes where it stopped.

The training loop saves, every `every` epochs, all that its next epoch depends on: the model,
optimizer and scheduler state, the batch-order generator, torch's global RNG, and whatever the code
around the loop carries across epochs (registered with `carry`: `fit`'s history and best-validation
weights, a mitigation's multipliers, SNL's λ, lowest count and history). Restored, training goes on
as if it had never stopped: on the CPU, bit for bit.

One file per stage, written atomically and fsynced (a reader sees the previous checkpoint or the new one,
even after a power loss); only the holder of the stage's lock writes it, and the store deletes it once the
stage is stored. A checkpoint that cannot be read anyway (one cut short before writes were fsynced, a
disk's fault) is moved to `damaged/` beside its folder (`<storage>/damaged/checkpoints/`), with a
warning, and the stage trains from its first epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairsweep.files import move_aside, unreadable, write_atomic


class EpochCheckpoint:
    def __init__(self, path: Path, every: int = 1):
        self.path, self.every = Path(path), every
        self.resumed_from = 0  # epochs done when training resumed from this checkpoint; 0: from the start
        self._carried: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}

    def carry(self, name: str, get: Callable[[], Any], put: Callable[[Any], None]) -> None:
        """Save `get()` with every checkpoint under `name`; `put(saved)` restores it. Register before training."""
        self._carried[name] = (get, put)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler | None, generator: torch.Generator) -> int:
        """Load the last checkpoint, if any, into the objects given; returns the epochs it had done (0: none)."""
        if not self.path.is_file():
            return 0
        try:  # read whole before anything is restored: a damaged checkpoint leaves the objects as they are
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated zip: RuntimeError, OSError (EINVAL), EOFError, UnpicklingError
            move_aside(self.path, self.path.parent.parent, unreadable(exc))
            return 0
        with torch.no_grad():  # in place: the optimizer holds these very parameters (a gate's load would replace it)
            for key, tensor in model.state_dict().items():
                tensor.copy_(saved["model"][key])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        for name, (_, put) in self._carried.items():
            put(saved["carried"][name])
        self.resumed_from = saved["epochs"]
        return self.resumed_from

    def save(self, epochs: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None, generator: torch.Generator) -> None:
        """Checkpoint after `epochs` epochs, if it is a multiple of `every`."""
        if epochs % self.every:
            return
        state = {
            "epochs": epochs,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "carried": {name: get() for name, (get, _) in self._carried.items()},
        }
        write_atomic(self.path, lambda tmp: torch.save(state, tmp))
