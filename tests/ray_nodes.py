"""Real Ray nodes for the tests, on ports of their own, each torn down by killing exactly its own
processes (never `ray stop`, which would kill every Ray process on the machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")
PORT_NAMES = ("node-manager-port", "object-manager-port", "dashboard-agent-grpc-port",
              "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port")


def start_node(first_port: int, temp_dir: Path, num_cpus: int, head: str | None = None,
               resources: str | None = None) -> int:
    """`ray start` a node (a head if `head` is None, else a worker joining the head at `head`) on the
    ports from `first_port` up (the head's GCS on `first_port`; workers 20 ports from first_port + 10),
    in a session of its own; returns the session id that `kill_session` takes down."""
    args = [str(RAY), "start", "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
            "--min-worker-port", str(first_port + 10), "--max-worker-port", str(first_port + 29)]
    args += [f"--{name}={first_port + 1 + i}" for i, name in enumerate(PORT_NAMES)]
    if head is None:
        args += ["--head", "--port", str(first_port), "--include-dashboard=false", "--temp-dir", str(temp_dir)]
    else:
        args += ["--address", head]
    if resources is not None:
        args += ["--resources", resources]
    # `ray start --head` turns on token auth (~/.ray/auth_token); a joining node needs the mode set to use it
    starter = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "RAY_AUTH_MODE": "token"}, start_new_session=True)
    out, _ = starter.communicate(timeout=240)
    if starter.returncode != 0:
        kill_session(starter.pid)
        raise AssertionError(f"ray start failed:\n{out}")
    return starter.pid  # its daemons stay in its session after it exits


def kill_session(sid: int, timeout: float = 60) -> None:
    """SIGKILL every process of session `sid` until none is left (Ray workers have process groups
    of their own, so killing the driver's group is not enough)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        members = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == sid and not _is_zombie(entry):
                        members.append(int(entry.name))
                except (ProcessLookupError, PermissionError, FileNotFoundError):
                    pass
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"processes of session {sid} outlived SIGKILL")


def _is_zombie(proc: Path) -> bool:
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
