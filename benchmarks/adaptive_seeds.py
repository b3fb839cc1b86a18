"""Adaptive seeds against fixed seeds on the embedded search spec (`sweeps/pareto_search.yaml`).

Runs the same search twice, each in a fresh directory (its own storage, study and MLflow store), with
the same sampler and sampler seed and the same number of configurations (`n_trials`): once with
`seeds: fixed` (every configuration runs `seeds_per_trial` seeds) and once with `seeds: adaptive`.
Prints for each the seeds run, the wall time of `fairsweep run`, and the hypervolume of the Pareto
front `fairsweep pareto` finds, against one reference point for both; then the ratios.

    python benchmarks/adaptive_seeds.py [--set sweep.search.n_trials=12 ...] [--reference 0,100,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "sweeps" / "pareto_search.yaml"


def run(mode: str, overrides: list[str], reference: str, where: Path) -> dict:
    where.mkdir(parents=True)
    sets = [a for item in [*overrides, f"sweep.search.seeds={mode}"] for a in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    swept = subprocess.run([sys.executable, "-m", "fairsweep", "run", str(SPEC), *sets], cwd=where, env=env,
                           capture_output=True, text=True)
    wall = time.perf_counter() - start
    if swept.returncode != 0:
        raise SystemExit(f"{mode}: fairsweep run failed\n{swept.stdout[-3000:]}\n{swept.stderr[-3000:]}")
    front = subprocess.run([sys.executable, "-m", "fairsweep", "pareto", str(SPEC), *sets, "--format", "json",
                            "--reference", reference, "--plot", str(where / "front.png")],
                           cwd=where, env=env, capture_output=True, text=True)
    if front.returncode != 0:
        raise SystemExit(f"{mode}: fairsweep pareto failed\n{front.stderr[-3000:]}")
    seeds = len(list((where / "fairsweep-runs" / "trials").glob("*.json")))
    return {"mode": mode, "seeds_run": seeds, "wall_s": wall, "hypervolume": json.loads(front.stdout)["hypervolume"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--reference", default="0,100,1000",
                        help="the hypervolume's reference point (acc, drop_gap_pct, relu_count), the same for both")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="fairsweep-adaptive-"))
    print(f"in {out}; load average {os.getloadavg()[0]:.2f}; overrides {args.overrides}", flush=True)
    rows = [run(mode, args.overrides, args.reference, out / mode) for mode in ("fixed", "adaptive")]
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    fixed, adaptive = rows
    print(f"adaptive / fixed: seeds {adaptive['seeds_run'] / fixed['seeds_run']:.2f}, wall time "
          f"{adaptive['wall_s'] / fixed['wall_s']:.2f}, hypervolume {adaptive['hypervolume'] / fixed['hypervolume']:.3f}")


if __name__ == "__main__":
    main()
