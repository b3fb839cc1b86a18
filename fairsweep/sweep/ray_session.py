"""The sweep's Ray: its environment, a cluster's reachability, connecting or starting a local one, and
shutting down what this process started (`RaySession`, a context manager).

A local Ray is started with `address="local"` (a Ray of our own: plain `ray.init()` would join the
cluster `ray start` last started on this machine, someone else's perhaps), no dashboard, and
`_node_ip_address="127.0.0.1"` for its node's address.

What listens (Ray 2.60, seen with `ss -ltnp` while a local sweep ran): the GCS, the raylet (two
ports), the driver's and each worker's core worker bind their gRPC ports on all interfaces, and
the runtime-env agent on the machine's own address; the ports are random. `_node_ip_address` only
sets the address the node advertises: Ray has no setting that binds these servers to loopback.
What protects them is Ray's token authentication, on by default for a new local Ray (unless the
user sets `RAY_AUTH_MODE`; setting it here, after Ray's import has read its configuration, would
leave the driver without the token its own GCS then asks for, as seen here); the token is `~/.ray/auth_token`, which Ray makes
on first use readable by everyone and fairsweep then restricts to its owner): a process without
the token is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fairsweep import errors
from fairsweep.errors import UserError


VERBOSE_ENV = "FAIRSWEEP_VERBOSE"  # "1": Ray's, Tune's and MLflow's own lines shown (`fairsweep run --verbose`)


def verbose() -> bool:
    """Whether the user asked for the libraries' own output (inherited by the trials' workers)."""
    return os.environ.get(VERBOSE_ENV) == "1"


def ray_logging() -> dict:
    """`ray.init`'s logging: warnings only, the workers' output not forwarded, unless verbose."""
    return {"logging_level": logging.INFO if verbose() else logging.WARNING, "log_to_driver": verbose()}


def ray_environment() -> None:
    """Set before Ray is imported."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, Tune then prints nothing itself
    # Tune's default per-trial loggers off (its TensorBoard writer costs the driver a thread's CPU while
    # the trials train); the trial records and MLflow hold the results. The Tune backend adds back the
    # JSON one, from which Tune's result grid reads each trial's last result.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A local Ray turns token authentication on and says so at every start; it stays on, unsaid
    if not verbose():
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def local_resources() -> dict[str, float]:
    """What a local Ray started by fairsweep offers."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def largest_node() -> dict[str, float]:
    """The most CPUs and the most GPUs any one alive node of the connected Ray cluster has: a trial runs on
    one node, so the cluster's totals could promise what no node can give."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    return {key: max((n.get(key, 0.0) for n in nodes), default=0.0) for key in ("CPU", "GPU")}


def check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers is an error now: `ray.init` would retry it without end."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(errors.NO_RAY_CLUSTER.format(address=address, reason=exc.strerror or exc)) from None


def private_token(path: Path) -> None:
    """Ray writes its token readable by every user of the machine: readable by its owner only, if ours."""
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:  # no token (authentication off), or not ours to change
        pass


def is_initialized() -> bool:
    ray_environment()
    import ray

    return ray.is_initialized()


class RaySession:
    """Ray for one sweep: `connect()` joins the cluster at `address` (checked reachable first) or starts a
    local Ray; leaving the block shuts down what `connect` started. A Ray already initialized in this
    process (a test's, say) is used as it is and left running."""

    def __init__(self, address: str | None):
        self.address = address
        self.started = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def connect(self) -> None:
        if self.address:
            check_reachable(self.address)
            if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").is_file():
                # `ray start` clusters use token auth with this file by default; Ray 2.60 picks the token up
                # for `--address auto` but not for an explicit HOST:PORT unless the mode is set before Ray
                # is imported (seen here).
                os.environ["RAY_AUTH_MODE"] = "token"
        if is_initialized():
            return
        import ray

        if self.address:
            try:
                ray.init(address=self.address, **ray_logging())
            except Exception as exc:  # ConnectionError, or Ray's own when no cluster answers
                raise UserError(errors.NO_RAY_CLUSTER.format(address=self.address, reason=one_line(exc))) from None
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, **ray_logging(),
                     _node_ip_address="127.0.0.1")
            private_token(Path.home() / ".ray" / "auth_token")
        self.started = True

    def resources(self) -> tuple[dict[str, float], str]:
        """What one node offers a trial, and where that is, for the pre-flight's resource check."""
        if self.address:
            return largest_node(), f"the largest node of the Ray cluster at {self.address}"
        if is_initialized():
            return largest_node(), "this machine's Ray"
        return local_resources(), "this machine"


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
