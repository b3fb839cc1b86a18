"""Stage models in MLflow: a stored stage's model as an MLflow model that takes the dataset's raw inputs
(`RawInputModel`); `tracking.logged` logs it once per experiment and links it to every trial run that
ends with that stage.

A logged model is a `torch.export` program (MLflow's `pt2` format), traced from the model rebuilt from the
stage's state dict, masks and `create_model` arguments, with the dataset's preprocessing inside: it takes
raw inputs (uint8 images for the image datasets) and normalises them exactly as training did, so
`mlflow.pytorch.load_model("models:/<model id>")` predicts what the trial's model predicts on the
normalised inputs, to the bit. MLflow loads a `pt2` model without unpickling anything (it checks that
the archive holds no pickle), so loading one never runs code from the artifact, and the loaded model
needs neither fairsweep nor the model's class.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

EXAMPLE_ROWS = 2  # the input example's batch: a batch of 1 would fix the exported batch size at 1


class RawInputModel(nn.Module):
    """`net` behind its dataset's preprocessing (`GroupedData.preprocessing`): raw inputs in, logits out."""

    def __init__(self, net: nn.Module, preprocessing: dict[str, Any] | None):
        super().__init__()
        self.net = net
        self.preprocessing = preprocessing or {"dtype": "float32", "transform": "none"}
        transform = self.preprocessing["transform"]
        if transform == "affine":  # per channel, as `Pixels` does: x.float() · scale + shift
            self.register_buffer("a", torch.tensor(self.preprocessing["scale"]).view(1, -1, 1, 1))
            self.register_buffer("b", torch.tensor(self.preprocessing["shift"]).view(1, -1, 1, 1))
        elif transform == "standardize":  # as digits' loader does: (x − mean) / std
            self.register_buffer("a", torch.tensor(self.preprocessing["mean"]))
            self.register_buffer("b", torch.tensor(self.preprocessing["std"]))
        elif transform != "none":
            raise ValueError(f"unknown preprocessing transform {transform!r}")
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.transform == "affine":
            x = x * self.a + self.b
        elif self.transform == "standardize":
            x = (x - self.a) / self.b
        return self.net(x)

    def example(self, input_shape: list[int]) -> torch.Tensor:
        """An input of the raw kind (all zeros: a black image), `EXAMPLE_ROWS` of them."""
        return torch.zeros((EXAMPLE_ROWS, *input_shape), dtype=getattr(torch, self.preprocessing["dtype"]))

    def describe(self) -> str:
        """What the model takes, in words (the logged model's `fairsweep.inputs` tag)."""
        dtype = self.preprocessing["dtype"]
        return {"affine": f"raw {dtype} images (N, C, H, W) with values 0..255; normalised inside",
                "standardize": f"raw {dtype} values as the dataset holds them; standardised inside",
                "none": f"{dtype} inputs as the dataset holds them (no preprocessing)"}[self.transform]
