"""ReLU sites: every ReLU of every model is one of these, so counting, masking and gating
never need per-architecture code.

A site's units are the (C, H, W) positions of one sample's activation. A unit whose mask is 0
passes its input through (identity); 1 keeps the ReLU. During SNL a site carries a trainable
gate α instead, computing α·relu(x) + (1−α)·x.
"""

from __future__ import annotations

import torch
from torch import nn


class ReLUSite(nn.Module):
    def __init__(self, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual  # applied to a residual sum: the one DeepReDuce's thinning drops
        self.register_buffer("mask", None)
        self.register_parameter("gate", None)
        self.unit_shape: tuple[int, ...] | None = None  # set by the first forward
        self._mode = "relu"  # relu | identity | masked | gated, derived from mask/gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unit_shape = tuple(x.shape[1:])
        if self._mode == "relu":
            return torch.relu(x)
        if self._mode == "identity":  # a frozen all-zero mask: no per-element work at all
            return x
        # α·relu(x) + (1−α)·x == x + α·relu(−x); the same form serves a binary mask.
        weight = self.gate if self._mode == "gated" else self.mask
        return x + weight * torch.relu(-x)

    def set_mask(self, mask: torch.Tensor | None) -> None:
        self.mask = None if mask is None else mask.detach().to(torch.float32).clone()
        self._refresh_mode()

    def set_gate(self, gate: torch.Tensor | None) -> None:
        self.gate = None if gate is None else nn.Parameter(gate.detach().to(torch.float32).clone())
        self._refresh_mode()

    def live_units(self) -> int:
        """Units that still apply a ReLU; needs the unit shape from one forward pass."""
        if self.unit_shape is None:
            raise RuntimeError("run one forward pass before counting ReLUs")
        if self.mask is None:
            return int(torch.Size(self.unit_shape).numel())
        return int(self.mask.count_nonzero())

    def _refresh_mode(self) -> None:
        if self.gate is not None:
            self._mode = "gated"
        elif self.mask is None or bool(self.mask.all()):
            self._mode = "relu"
        elif not bool(self.mask.any()):
            self._mode = "identity"
        else:
            self._mode = "masked"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Masks and gates exist only on linearized models: create them from the checkpoint so that a
        # fresh model loads any stage's state dict.
        self.set_gate(state_dict.get(prefix + "gate"))
        self.set_mask(state_dict.get(prefix + "mask"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def relu_site(residual: bool = False) -> ReLUSite:
    """The one way architectures create a ReLU; `residual` marks a ReLU applied to a residual sum."""
    return ReLUSite(residual)


def relu_sites(model: nn.Module) -> dict[str, ReLUSite]:
    """Every ReLU site of `model`, by qualified name (e.g. `layer2.1.relu2`), in forward order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ReLUSite)}


def stage_of(site_name: str) -> str:
    """The stage a site belongs to: the top-level module holding it (`stage2.1.relu2` -> `stage2`)."""
    return site_name.split(".", 1)[0]
