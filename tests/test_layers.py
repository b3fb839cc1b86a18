"""The package's layers import downwards only: spec ← data, models ← linearize ← train ← metrics ← sweep ←
tracking ← report ← cli. Each layer is imported in a fresh interpreter, and what it pulled in of fairsweep is checked
against the layers below it; the spec alone needs neither torch nor any registry, and reading a sweep's runs,
records and stored results (`pareto`, `report`) needs no torch."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT

# lowest first; errors, registry and files are utilities every layer may use
LAYERS = {"spec": 0, "data": 1, "models": 1, "linearize": 2, "train": 3, "metrics": 4, "sweep": 5, "tracking": 6,
          "report": 7, "cli": 8}
UTILITIES = {"fairsweep", "fairsweep.errors", "fairsweep.registry", "fairsweep.files", "fairsweep.__main__"}


def layer_of(module: str) -> str:
    return module.split(".")[1]


def imported_by(*modules: str) -> tuple[set[str], set[str]]:
    """The fairsweep modules and the heavy libraries (torch, ray, mlflow, optuna) that importing `modules` loads."""
    code = (f"import sys, json; import {', '.join(modules)}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fairsweep', 'torch', 'ray', 'mlflow', 'optuna'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout))
    return {m for m in loaded if m.startswith("fairsweep")} - UTILITIES, {m.split(".")[0] for m in loaded} - {"fairsweep"}


def modules_of(layer: str) -> list[str]:
    package = ROOT / "fairsweep" / layer
    if package.is_dir():
        return [f"fairsweep.{layer}.{p.stem}".removesuffix(".__init__") for p in sorted(package.glob("*.py"))]
    return [f"fairsweep.{layer}"]


@pytest.mark.parametrize("layer", [name for name in LAYERS if name != "cli"])
def test_a_layer_imports_only_the_layers_below_it(layer):
    fairsweep_modules, _ = imported_by(*modules_of(layer))  # every module of the layer, in one interpreter
    above = {m for m in fairsweep_modules if LAYERS[layer_of(m)] > LAYERS[layer]}
    assert not above, f"the {layer} layer imports {sorted(above)}"


def test_the_spec_needs_no_torch_and_no_registry():
    fairsweep_modules, heavy = imported_by("fairsweep.spec")
    assert {layer_of(m) for m in fairsweep_modules} == {"spec"} and heavy == set()


def test_the_command_line_starts_without_torch_ray_or_mlflow():
    assert imported_by("fairsweep.cli")[1] == set()


def test_reading_a_sweeps_runs_needs_no_torch():
    """`fairsweep pareto` and `report` read runs, records and stage results: importing torch (seconds) is for
    what trains, rebuilds or logs a model."""
    _, heavy = imported_by("fairsweep.tracking", "fairsweep.sweep.pareto", "fairsweep.sweep.store",
                           "fairsweep.sweep.results", "fairsweep.report")
    assert "torch" not in heavy and "mlflow" not in heavy
