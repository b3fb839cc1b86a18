"""Epoch checkpoints: a trainer SIGKILLed in the middle of a stage, after a checkpoint, leaves the stage
to the next trainer, which resumes it from that checkpoint; the stage and the trial's metrics then
equal those of an uninterrupted run (CPU), for every kind of training stage."""

import json
import re
import signal
import subprocess
import sys

import pytest
import torch

from fairsweep.errors import DamagedFileWarning
from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial

# Runs the trial in a child process that SIGKILLs itself right after saving checkpoint `epochs` of
# its `kind` stage: a crash at a known point, mid-stage, so the test cannot race the training.
DIE_AFTER_CHECKPOINT = """
import json, os, signal, sys
import torch
from fairsweep.spec import validate_spec
from fairsweep.sweep.plan import make_plan
from fairsweep.sweep.store import StageStore
from fairsweep.sweep.trial import run_trial
from fairsweep.train.checkpoint import EpochCheckpoint

raw, root, kind, epochs = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
save = EpochCheckpoint.save

def save_then_die(self, done, *args):
    save(self, done, *args)
    if self.path.name.startswith(kind + "-") and done == epochs:
        os.kill(os.getpid(), signal.SIGKILL)

EpochCheckpoint.save = save_then_die
torch.set_num_threads(1)
run_trial(make_plan(validate_spec(raw)).trials[0], StageStore(root))
"""

NO_DIAGNOSTICS = {"grad_norms": False, "margins": False, "hessian": False, "bound": False}


def snl_finetune_raw(tiny_raw):
    tiny_raw["base"]["epochs"] = 4  # selected by best validation accuracy
    tiny_raw["finetune"].update(epochs=4, mu=0.05)  # Algorithm 1: multipliers carried across epochs
    return tiny_raw


def released_code_finetune_raw(tiny_raw):
    tiny_raw = snl_finetune_raw(tiny_raw)
    tiny_raw["finetune"]["mitigation"] = "released_code"  # its multipliers and per-batch violation sums carried
    return tiny_raw


def deepreduce_raw(tiny_raw):
    tiny_raw["linearize"] = {"method": "deepreduce", "budget": 400,
                             "deepreduce": {"epochs": 4, "lr": 0.05, "width_factors": [1.0, 0.5]}}
    return tiny_raw


@pytest.mark.parametrize("make_raw, kind", [(snl_finetune_raw, "base"), (snl_finetune_raw, "linearize"),
                                            (snl_finetune_raw, "finetune"), (released_code_finetune_raw, "finetune"),
                                            (deepreduce_raw, "linearize")],
                         ids=["base", "snl", "finetune", "finetune-released_code", "deepreduce"])
def test_a_stage_killed_after_a_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, tiny_raw, make_raw, kind):
    raw = make_raw(tiny_raw)
    raw["diagnostics"] = NO_DIAGNOSTICS
    trial = make_plan(validate_spec(raw)).trials[0]
    stage = trial.stages[kind]
    torch.set_num_threads(1)
    uninterrupted = run_trial(trial, StageStore(tmp_path / "uninterrupted"))
    assert len(StageStore(tmp_path / "uninterrupted").result(stage).history) > 2  # killed mid-stage below

    store = StageStore(tmp_path / "killed")
    child = subprocess.run([sys.executable, "-c", DIE_AFTER_CHECKPOINT, json.dumps(raw), str(store.root), kind, "2"],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    checkpoint = store.root / "checkpoints" / f"{stage.id}.pt"
    assert checkpoint.is_file() and not store.has(stage)

    resumed = run_trial(trial, store)
    assert resumed.metrics == uninterrupted.metrics
    assert resumed.trained[kind] and not checkpoint.exists()  # deleted once the stage is stored
    result = store.result(stage)
    assert result.resumed_from_epoch == 2
    assert result.model_copy(update={"resumed_from_epoch": None}) == StageStore(tmp_path / "uninterrupted").result(stage)
    for key, tensor in StageStore(tmp_path / "uninterrupted").load(stage).state.items():
        assert torch.equal(store.load(stage).state[key], tensor), key


def test_a_checkpoint_cut_short_after_a_kill_is_moved_aside_and_the_stage_trains_from_the_start(tmp_path, tiny_raw):
    raw = {**tiny_raw, "diagnostics": NO_DIAGNOSTICS}  # base: 3 epochs, killed after the second
    trial = make_plan(validate_spec(raw)).trials[0]
    stage = trial.stages["base"]
    torch.set_num_threads(1)
    uninterrupted = run_trial(trial, StageStore(tmp_path / "uninterrupted"))

    store = StageStore(tmp_path / "killed")
    child = subprocess.run([sys.executable, "-c", DIE_AFTER_CHECKPOINT, json.dumps(raw), str(store.root), "base", "2"],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    checkpoint = store.root / "checkpoints" / f"{stage.id}.pt"
    cut = checkpoint.read_bytes()[: checkpoint.stat().st_size // 2]  # what a kill mid-write left, unsynced
    checkpoint.write_bytes(cut)

    with pytest.warns(DamagedFileWarning, match=re.escape(f"{checkpoint} cannot be read")):
        resumed = run_trial(trial, store)
    assert resumed.metrics == uninterrupted.metrics and store.result(stage).resumed_from_epoch is None
    for key, tensor in StageStore(tmp_path / "uninterrupted").load(stage).state.items():
        assert torch.equal(store.load(stage).state[key], tensor), key
    [moved] = (store.root / "damaged" / "checkpoints").iterdir()
    assert moved.name.startswith(checkpoint.name + ".") and moved.read_bytes() == cut


def test_checkpoint_every_sets_the_cadence_and_zero_turns_checkpoints_off(tmp_path, tiny_raw):
    tiny_raw["diagnostics"] = NO_DIAGNOSTICS
    stage = make_plan(validate_spec(tiny_raw)).trials[0].stages["base"]
    store = StageStore(tmp_path)
    assert store.checkpoint(stage, 0) is None
    checkpoint = store.checkpoint(stage, 2)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epochs in (1, 2, 3):
        checkpoint.save(epochs, model, optimizer, None, torch.Generator())
    assert torch.load(checkpoint.path, weights_only=True)["epochs"] == 2
