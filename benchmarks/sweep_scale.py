"""How the driver scales with the number of trials: sweeps of N trials whose stages cost almost nothing.

Each N is a grid of seeds × µ on `toy2d` with the smallest model (an MLP 2 units wide), one epoch per
stage, no diagnostics: the real command (`fairsweep run` in a process of its own, Ray Tune, the stage
store, MLflow in an embedded SQLite database), one trial at a time. For each N it prints:

- the driver's time per trial: (the sweep's wall time − the trials' own time, from their records) / N;
- the peak resident memory of the driver process and of the largest Ray worker (sampled every 0.2 s
  from /proc), and of all the sweep's processes together;
- the MLflow store's size (database and artifacts) and the storage's;
- the wall time of a resume with nothing left to run (the same command again), of `fairsweep validate`
  and of `fairsweep pareto`.

The targets (issue: sweeps of thousands of trials): time per trial at 10,000 within 1.5× of that at
400; memory flat in N (within 1 MB per 100 trials); a resume of 2,000 under 15 s, of 10,000 under 60 s;
`pareto` on 2,000 under 5 s. The ratios against the smallest N are printed, measured in this run.

    python benchmarks/sweep_scale.py [--sizes 400,2000,10000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def spec_for(n: int) -> dict:
    seeds = max(1, round(math.sqrt(n / 4)))
    while n % seeds:  # seeds × µ values = n exactly
        seeds -= 1
    mus = n // seeds
    return {
        "name": f"scale-{n}", "seed": 0,
        "data": {"dataset": "toy2d", "target": "class", "group": "class", "val_fraction": 0.15,
                 "test_fraction": 0.25, "batch_size": 512},
        "model": {"arch": "mlp", "width": 2},
        "base": {"epochs": 1, "optimizer": "adam", "lr": 0.02},
        "linearize": {"method": "random", "budget": 0.5},
        "finetune": {"epochs": 1, "optimizer": "adam", "lr": 0.02, "batch_size": 512},
        "diagnostics": {"grad_norms": False, "margins": False, "hessian": False, "bound": False},
        "resources": {"cpus_per_trial": 1},
        # what logging models costs is model_logging.py's to measure: here, the per-trial machinery alone
        "tracking": {"log_models": "none"},
        "sweep": {"max_concurrent_trials": 1,
                  "grid": {"seed": list(range(seeds)), "finetune.mu": [round(0.001 * i, 3) for i in range(mus)]}},
    }


class TreeMemory:
    """Peak resident memory of a process and its descendants, sampled from /proc."""

    def __init__(self, root_pid: int):
        self.root, self.peak_root, self.peak_worker, self.peak_total = root_pid, 0, 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            sizes = tree_rss(self.root)
            if sizes:
                self.peak_root = max(self.peak_root, sizes.get(self.root, 0))
                self.peak_worker = max([self.peak_worker, *(v for k, v in sizes.items() if k != self.root)])
                self.peak_total = max(self.peak_total, sum(sizes.values()))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def tree_rss(root: int) -> dict[int, int]:
    """pid -> resident bytes of `root` and every process descended from it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    sizes = {}
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1]) * 1024
        except OSError:
            continue
    return sizes


def fairsweep(*args: str, cwd: Path, memory: bool = False) -> tuple[float, subprocess.CompletedProcess, TreeMemory | None]:
    """`fairsweep ARGS` in a new process: its wall time, its result, and its memory if asked."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "fairsweep", *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    sampler = TreeMemory(process.pid) if memory else None
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    if sampler is not None:
        sampler.stop()
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    if result.returncode != 0:
        raise SystemExit(f"`fairsweep {' '.join(args)}` failed ({result.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    return seconds, result, sampler


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def measure(n: int, where: Path) -> dict:
    where.mkdir(parents=True, exist_ok=True)
    spec = where / f"scale-{n}.yaml"
    spec.write_text(yaml.safe_dump(spec_for(n), sort_keys=False))
    wall, _, memory = fairsweep("run", str(spec), "--storage", "runs", cwd=where, memory=True)
    records = [json.loads(p.read_text()) for p in (where / "runs" / "trials").glob("*.json")]
    assert len(records) == n, f"{len(records)} trial records for {n} trials"
    own = sum(r["timing"]["seconds"] for r in records)
    resume, resumed, _ = fairsweep("run", str(spec), "--storage", "runs", cwd=where)
    assert f"{n}/{n} trials finished ({n} from earlier runs)" in resumed.stdout.replace(",", ""), resumed.stdout[-2000:]
    validate, _, _ = fairsweep("validate", str(spec), "--storage", "runs", cwd=where)
    pareto, _, _ = fairsweep("pareto", str(spec), "--plot", str(where / "front.png"), cwd=where)
    return {"n": n, "wall_s": wall, "trials_own_s": own, "driver_s_per_trial": (wall - own) / n,
            "driver_peak_mb": memory.peak_root / 2**20, "worker_peak_mb": memory.peak_worker / 2**20,
            "all_peak_mb": memory.peak_total / 2**20,
            "mlflow_mb": (size_of(where / "mlflow.db") + size_of(where / "mlruns") + size_of(where / "mlartifacts"))
            / 2**20, "storage_mb": size_of(where / "runs") / 2**20,
            "resume_s": resume, "validate_s": validate, "pareto_s": pareto}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="400,2000,10000", help="numbers of trials, comma-separated")
    parser.add_argument("--out", default=None, help="where the sweeps run (default: a new temporary directory)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fairsweep-scale-"))
    print(f"sweeps in {out}; load average {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for n in sizes:
        row = measure(n, out / f"n{n}")
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    first = rows[0]
    print(f"\n{'N':>7} {'driver s/trial':>15} {'× N0':>6} {'driver MB':>10} {'worker MB':>10} {'MLflow MB':>10} "
          f"{'resume s':>9} {'validate s':>11} {'pareto s':>9}")
    for row in rows:
        print(f"{row['n']:>7,} {row['driver_s_per_trial']:>15.3f} {row['driver_s_per_trial'] / first['driver_s_per_trial']:>6.2f} "
              f"{row['driver_peak_mb']:>10.0f} {row['worker_peak_mb']:>10.0f} {row['mlflow_mb']:>10.1f} "
              f"{row['resume_s']:>9.1f} {row['validate_s']:>11.1f} {row['pareto_s']:>9.1f}")
    if len(rows) > 1:
        last = rows[-1]
        growth = (last["driver_peak_mb"] - first["driver_peak_mb"]) / ((last["n"] - first["n"]) / 100)
        print(f"driver memory growth: {growth:.2f} MB per 100 trials (target: within 1)")


if __name__ == "__main__":
    main()
