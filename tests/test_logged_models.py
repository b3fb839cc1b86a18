"""A stage's model in MLflow (`fairsweep.tracking.models`): its preprocessing inside, exact on raw inputs; logged
once per stage and linked to every further run; loaded by `models:/` without running code from the artifact."""

import os
import pickle
import shutil

import mlflow
import pytest
import torch

from fairsweep.data import load_splits
from fairsweep.models import create_model
from fairsweep.models.sites import relu_sites
from fairsweep.spec import validate_spec
from fairsweep.tracking import Tracker
from fairsweep.tracking.models import RawInputModel


def masked_cnn(num_classes: int, in_channels: int, shape) -> torch.nn.Module:
    """A small CNN with half of every ReLU site's units linearized at random (as a linearized stage is)."""
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=num_classes, in_channels=in_channels, width=4).eval()
    model(torch.zeros(1, *shape))
    for site in relu_sites(model).values():
        site.set_mask(torch.rand(site.unit_shape) > 0.5)
    return model


def spec_data(dataset: str):
    return validate_spec({"name": "m", "data": {"dataset": dataset}}).data


def test_an_image_model_takes_raw_uint8_images_and_predicts_what_the_trained_model_does():
    test = load_splits(spec_data("glyphs"), seed=0).test
    assert test.x.dtype == torch.uint8 and test.preprocessing()["transform"] == "affine"
    net = masked_cnn(len(test.class_names), 3, test.x.shape[1:])
    raw_model = RawInputModel(net, test.preprocessing()).eval()
    with torch.no_grad():
        assert torch.equal(raw_model(test.x[:64]), net(test.inputs(torch.arange(64))))  # to the bit
        assert not torch.equal(net(test.x[:64].float()), net(test.inputs(torch.arange(64))))  # raw pixels are not inputs


def test_digits_model_standardises_its_raw_values_as_the_loader_did():
    test = load_splits(spec_data("digits"), seed=0).test
    mean, std = test.standardized
    raw = torch.round(test.x * std + mean)  # digits' values are the integers 0..16
    assert raw.min() == 0 and raw.max() == 16
    net = masked_cnn(10, 1, (1, 8, 8))
    with torch.no_grad():
        assert torch.equal(RawInputModel(net, test.preprocessing())(raw), net(test.x))
    assert RawInputModel(net, None).transform == "none"  # a record from before preprocessing was kept


def test_log_models_takes_all_front_none_and_the_old_booleans():
    assert validate_spec({"name": "m"}).tracking.log_models == "front"
    assert validate_spec({"name": "m", "tracking": {"log_models": True}}).tracking.log_models == "all"
    assert validate_spec({"name": "m", "tracking": {"log_models": False}}).tracking.log_models == "none"
    with pytest.raises(Exception, match="front"):
        validate_spec({"name": "m", "tracking": {"log_models": "some"}})


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One glyphs model logged for stage `finetune-x` as the output of a run, then linked to a second run."""
    root = tmp_path_factory.mktemp("models")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "models")
    test = load_splits(spec_data("glyphs"), seed=0).test
    net = masked_cnn(len(test.class_names), 3, test.x.shape[1:])
    runs = [tracker.client.create_run(tracker.experiment_id).info.run_id for _ in range(2)]
    built = []

    def build():
        built.append(1)
        return RawInputModel(net, test.preprocessing()).eval()

    ids = [tracker.models.output(run, "finetune-x", build, list(test.x.shape[1:])) for run in runs]
    return tracker, runs, ids, built, net, test, root


def test_a_stage_is_logged_once_and_its_model_linked_to_each_further_run(logged):
    tracker, runs, ids, built, *_ = logged
    assert ids[0] == ids[1] and len(built) == 1  # the second run's model was never even built
    assert [tracker.run_model(run) for run in runs] == ids
    found = mlflow.search_logged_models(experiment_ids=[tracker.experiment_id], output_format="list")
    assert [m.model_id for m in found] == ids[:1] and found[0].tags["fairsweep.stage_id"] == "finetune-x"
    # a new tracker (a later sweep) finds it by its stage
    assert Tracker(tracker.uri, "models").models.model_of("finetune-x") == ids[0]


def test_models_uri_loads_a_pt2_program_that_predicts_exactly_what_the_stage_model_does(logged):
    tracker, runs, ids, _, net, test, _ = logged
    model = mlflow.pytorch.load_model(f"models:/{ids[0]}")
    assert not isinstance(model, RawInputModel)  # an exported program: no fairsweep class is needed
    info = mlflow.models.get_model_info(f"models:/{ids[0]}")
    assert info.flavors["pytorch"]["model_data"] == "data" and info.signature.inputs.inputs[0].type.name == "uint8"
    with torch.no_grad():
        assert torch.equal(model(test.x[:50]), net(test.inputs(torch.arange(50))))
        assert model(test.x[:3]).shape == (3, len(test.class_names))  # any batch size, not the example's


def test_loading_a_model_never_runs_code_planted_in_its_folder(logged, tmp_path, monkeypatch):
    tracker, runs, ids, *_ = logged
    clean, planted = tmp_path / "clean", tmp_path / "planted"
    shutil.copytree(mlflow.artifacts.download_artifacts(f"models:/{ids[0]}"), clean)
    shutil.copytree(clean, planted)
    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    # what MLflow reads first in a model's folder: a pickled model, if the folder has one
    (planted / "data" / "model.pth").write_bytes(pickle.dumps(Planted()))
    (planted / "data" / "pickle_module_info.txt").write_text("pickle")
    # fairsweep's processes (and the README's loading line) refuse pickles: MLflow allows them unless told not to
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    model = mlflow.pytorch.load_model(str(clean))  # the pt2 archive is checked to hold no pickle, and loads
    assert model(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape[0] == 2
    with pytest.raises(mlflow.exceptions.MlflowException, match="pickle is disallowed"):
        mlflow.pytorch.load_model(str(planted))
    assert not marker.exists()
