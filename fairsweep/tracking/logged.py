"""Logged models of an experiment by the stage they hold (`StageModels`): a stage's model is logged to
MLflow once per experiment, as a `pt2` program that takes raw inputs (`tracking.models.RawInputModel`),
and linked to every further trial run that ends with that stage.

Reading runs needs none of this module's heavy imports: torch and MLflow's model code are imported when
a model is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairsweep.tracking.models import RawInputModel

STAGE_TAG = "fairsweep.stage_id"  # a logged model's tag: the stage whose model it is
INPUTS_TAG = "fairsweep.inputs"  # ... and what it takes (`RawInputModel.describe`)
MODELS_PAGE = 1000  # logged models per MLflow search


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
        import mlflow  # heavy, as torch is: only a driver that logs a model needs them, never a reader of runs
        import torch
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
