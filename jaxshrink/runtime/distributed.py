"""One job as several cooperating processes: JAX's multi-process runtime.

A sweep or a correlation run too large for one machine runs as N processes, one per
host (or several on one host), each with its own devices. `initialize` joins them
with `jax.distributed.initialize`; from then on `jax.devices()` lists every
process's devices, and `batching` shards the run axis over all of them (a global
mesh): each process trains its own runs, and nothing is communicated inside a
training step. Between compiled calls, every process gathers the run-level results
it reads on the host (`batching.to_host`), so all processes take the same
decisions. Orbax writes checkpoints from all processes together (`checkpoint`);
`runs.csv`, `results.json` and the figures come from process 0 alone
(`is_primary`). Every process loads the data itself.

    # two processes, e.g. on two hosts (or both on this one, to try it)
    python -m jaxshrink.main --config=configs/sweep.py --workdir=/shared/sweep \\
        --coordinator_address=host0:12345 --num_processes=2 --process_id=0   # host0
    python -m jaxshrink.main --config=configs/sweep.py --workdir=/shared/sweep \\
        --coordinator_address=host0:12345 --num_processes=2 --process_id=1   # host1

Under SLURM (`srun`) or Open MPI, `jax.distributed.initialize()` finds the
coordinator, the process count and each process's id itself, so no flag is needed
(`cluster_detected`).
"""

from __future__ import annotations

import os
import socket
import time

import jax

from jaxshrink.core import errors

# (size, rank) variables that say a cluster launcher started this process as one of
# several: SLURM's `srun` (not a plain `salloc` shell, which has no rank) and Open
# MPI's `mpirun`; `jax.distributed.initialize()` then reads the rest from the cluster.
_LAUNCHERS = (("SLURM_NTASKS", "SLURM_PROCID"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"))


def cluster_detected(environ=None) -> bool:
    """True when a launcher started this process as one of several (SLURM's `srun`,
    Open MPI's `mpirun`) or `JAX_COORDINATOR_ADDRESS` is set: JAX can then find its
    peers alone."""
    environ = os.environ if environ is None else environ
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for size, rank in _LAUNCHERS:
        try:
            if int(environ.get(size, "1")) > 1 and rank in environ:
                return True
        except ValueError:
            continue
    return False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 60,
    heartbeat_s: int = 60,
) -> bool:
    """Joins this process to the others of its job; False if it runs alone.

    With none of the three arguments and no launcher (`cluster_detected`), it does
    nothing: a single process, as always. Otherwise it must run before anything
    touches a JAX device. `timeout_s` bounds the wait for the other processes at
    start; `heartbeat_s` is how long the others go on after one process stops
    answering (a killed process) before they stop too.

    Raises:
      errors.ConfigError: the arguments are incomplete or inconsistent, or the
        coordinator could not be reached within `timeout_s` seconds.
    """
    given = [coordinator_address, num_processes, process_id]
    if all(v is None for v in given) and not cluster_detected():
        return False
    if any(v is not None for v in given) and any(v is None for v in given[1:]):
        raise errors.ConfigError(
            "distributed: --num_processes and --process_id go together (with "
            "--coordinator_address); give all three, or none under a cluster launcher"
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise errors.ConfigError(
            f"distributed: --process_id must be 0 to {num_processes - 1}, got {process_id}"
        )
    # JAX aborts the whole process (no exception) when its registration with the
    # coordinator times out, so a process other than the coordinator first checks,
    # within the same bound, that the coordinator's port answers.
    if coordinator_address and process_id and not reachable(coordinator_address, timeout_s):
        raise errors.ConfigError(
            f"distributed: process {process_id} could not join the job through the "
            f"coordinator at {coordinator_address} within {timeout_s} s (nothing answers "
            "there); check the address and that process 0 was started"
        )
    # Cross-process computations on CPUs (the gathers between calls) need collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=int(timeout_s),
            heartbeat_timeout_seconds=int(heartbeat_s),
        )
    except Exception as e:  # noqa: BLE001 -- jax raises several kinds; all mean "not joined"
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        where = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "the cluster's")
        raise errors.ConfigError(
            f"distributed: process {process_id if process_id is not None else '?'} could not "
            f"join the job through the coordinator at {where} within {timeout_s} s ({first}); "
            "check the address and that every process was started"
        ) from e
    return True


def reachable(address: str, timeout_s: float) -> bool:
    """True once a TCP connection to `address` ('host:port', '[v6]:port') succeeds,
    trying until `timeout_s` seconds have passed."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return True
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)


def is_primary() -> bool:
    """True in the process that writes the job's results (process 0)."""
    return jax.process_index() == 0


def all_agree(flag: bool) -> bool:
    """True when `flag` is true in every process of the job (a gather that every
    process must call at the same point); in one process, `flag` itself."""
    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils  # only jobs of several processes

    flags = multihost_utils.process_allgather(np.asarray([bool(flag)], np.int32))
    return bool(np.all(flags))


def barrier(name: str) -> None:
    """Waits until every process of the job reaches the barrier `name` (no-op alone)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def describe() -> str:
    """'' for one process; ', process 0 of 2' for several."""
    if jax.process_count() == 1:
        return ""
    return f", process {jax.process_index()} of {jax.process_count()}"
