"""Everything MLflow: one experiment per sweep name, a parent run per sweep, a run per trial (logged once per
experiment: a later sweep includes it) with its parameters (flat dotted keys), metrics, per-epoch curves (live,
while it trains) and, as `tracking.log_models` asks, its final model.

Only the sweep driver talks to MLflow, so the embedded SQLite store never sees concurrent writers.
A trial run is marked FINISHED only after everything of it is logged; an unfinished one left by a
killed driver is deleted and logged again, so a resumed sweep never holds duplicate trial runs.

- `stores`: tracking URIs (made absolute, checked before any training), the UI's address of a sweep's runs;
- `content`: what a run holds besides MLflow's own bookkeeping (params, datasets, group sizes, curve keys);
- `source`: every run's source tags (the spec file, its git commit);
- `models`: a stage's model as a `pt2` MLflow model taking raw inputs, logged once per stage;
- `tracker`: `Tracker`, the one MLflow client of a sweep's experiment;
- `sweep`: the driver's side (`SweepTracking`, `log_trial`, the front's models, the registry) and reading a
  finished sweep back (`sweep_runs`).
"""

import os

# No usage reports sent from the sweeps (as Ray's usage stats): MLflow reads this when it is first
# imported, which in fairsweep happens only in this package, after this line.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Nothing MLflow loads here is unpickled: fairsweep's models are pt2 programs (`tracking.models`), which MLflow
# then checks to hold no pickle, and a pickle planted in a model's folder is refused instead of run.
os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")

from fairsweep.metrics.values import group_size_metrics  # noqa: E402, F401
from fairsweep.tracking.content import curve_key, flatten  # noqa: E402
from fairsweep.tracking.stores import absolute_uri, experiment_names, runs_url, tracking_problems  # noqa: E402
from fairsweep.tracking.sweep import SweepRuns, SweepTracking, log_trial, sweep_runs  # noqa: E402
from fairsweep.tracking.tracker import PARENT_TAG, ROLE_TAG, SPEC_HASH_TAG, TRIAL_TAG, Tracker  # noqa: E402

__all__ = ["PARENT_TAG", "ROLE_TAG", "SPEC_HASH_TAG", "TRIAL_TAG", "SweepRuns", "SweepTracking", "Tracker",
           "absolute_uri", "curve_key", "experiment_names", "flatten", "group_size_metrics", "log_trial",
           "runs_url", "sweep_runs", "tracking_problems"]
