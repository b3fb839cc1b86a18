"""Stage models in MLflow: a stored stage's model as an MLflow model that takes the dataset's raw inputs,
logged once per experiment and linked to every trial run that ends with that stage.

A logged model is a `torch.export` program (MLflow's `pt2` format), traced from the model rebuilt from the
stage's state dict, masks and `create_model` arguments, with the dataset's preprocessing inside: it takes
raw inputs (uint8 images for the image datasets) and normalises them exactly as training did, so
`mlflow.pytorch.load_model("models:/<model id>")` predicts what the trial's model predicts on the
normalised inputs, to the bit. MLflow loads a `pt2` model without unpickling anything (it checks that
the archive holds no pickle), so loading one never runs code from the artifact, and the loaded model
needs neither fairsweep nor the model's class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

STAGE_TAG = "fairsweep.stage_id"  # a logged model's tag: the stage whose model it is
INPUTS_TAG = "fairsweep.inputs"  # ... and what it takes (`RawInputModel.describe`)
EXAMPLE_ROWS = 2  # the input example's batch: a batch of 1 would fix the exported batch size at 1
MODELS_PAGE = 1000  # logged models per MLflow search


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


class StageModels:
    """The logged models of an experiment by the stage they hold: a stage's model is logged once, and each
    further trial run that ends with it links to it."""

    def __init__(self, client, experiment_id: str):
        self.client, self.experiment_id = client, experiment_id
        self._by_stage: dict[str, str] | None = None  # stage id -> model id, read on first use

    def model_of(self, stage_id: str) -> str | None:
        """The id of the logged model of stage `stage_id`, if it has one."""
        if self._by_stage is None:
            self._by_stage = self._read()
        return self._by_stage.get(stage_id)

    def _read(self) -> dict[str, str]:
        from mlflow.entities import LoggedModelStatus

        found: dict[str, str] = {}
        token = None
        while True:  # every page: one search returns at most one
            page = self.client.search_logged_models([self.experiment_id], max_results=MODELS_PAGE, page_token=token)
            for model in page:
                stage = model.tags.get(STAGE_TAG)
                if stage and model.status == LoggedModelStatus.READY:  # not one a killed driver left half-logged
                    found.setdefault(stage, model.model_id)
            token = page.token
            if not token:
                return found

    def output(self, run_id: str, stage_id: str, build: Callable[[], RawInputModel | None],
               input_shape: list[int]) -> str | None:
        """Stage `stage_id`'s logged model as an output of run `run_id`: linked if the stage has one, else
        logged (`build()` makes it; None: it cannot, and nothing is logged). Returns its id."""
        if (model_id := self.model_of(stage_id)) is not None:
            self.link(run_id, model_id)
            return model_id
        model = build()
        return None if model is None else self._log(run_id, stage_id, model, input_shape)

    def _log(self, run_id: str, stage_id: str, model: RawInputModel, input_shape: list[int]) -> str:
        import mlflow
        from mlflow.models import Model, infer_signature

        example = model.example(input_shape)
        with torch.no_grad():
            signature = infer_signature(example.numpy(), model(example).numpy())
        logged = self.client.create_logged_model(self.experiment_id, name=stage_id, source_run_id=run_id,
                                                 tags={STAGE_TAG: stage_id, INPUTS_TAG: model.describe()})
        # Model.log rather than mlflow.pytorch.log_model: the run may be finished (a front's model is logged
        # when the sweep ends), and only Model.log takes a run that is not the active one.
        Model.log(artifact_path=None, name="model", flavor=mlflow.pytorch, pytorch_model=model,
                  model_id=logged.model_id, run_id=run_id, signature=signature, input_example=example.numpy(),
                  serialization_format="pt2",
                  pickle_module=mlflow.pytorch.pickle_module, metadata={"inputs": model.preprocessing},
                  validate_serving_input=False,  # MLflow would load the model back and run it: tests do that
                  pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])  # a pt2 model needs torch alone
        self._by_stage[stage_id] = logged.model_id
        return logged.model_id

    def link(self, run_id: str, model_id: str) -> None:
        """Record the logged model `model_id` as an output of run `run_id` (the run's Models)."""
        from mlflow.entities import LoggedModelOutput

        self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])

