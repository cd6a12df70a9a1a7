"""What keeps a run's numbers the same on any hardware layout, and what the backend adds.

jaxshrink runs every group of runs as one call of the same compiled program on its own
device (`batching.by_group`), so a run's steps do not change with the number of devices
or processes or with the other runs of its batch. Two things below the program can
still change its rounding, and `batch` holds a switch for each:

* **XLA's CPU thread pool.** XLA's CPU convolutions split the sum of a kernel gradient
  over its intra-op thread pool, and the pool is sized by the machine: its cores (the
  ``NPROC`` environment variable when set), raised to the number of devices of the
  process. Two layouts whose pools have the same size give the same bits; more forced
  host devices than cores (4 on a 2-core machine) enlarge the pool and change the
  rounding of XLA's convolutions. `batch.cpu_threads=N` fixes the pool at N threads
  (N at least the devices of a process), so that every layout up to N devices, and
  every machine, gives the same bits. It must be set before JAX starts its CPU backend:
  the command line does so; a library user sets it before the first JAX computation
  (or exports ``NPROC``). The direct convolutions jaxshrink uses on a CPU for small
  layers (`jaxshrink.core.convs`) do not depend on the pool.
* **GPU reductions.** Some GPU kernels (atomics in scatter-adds and in some
  convolution algorithms) sum in an order that changes from call to call.
  `batch.deterministic=True` asks XLA for deterministic kernels
  (``--xla_gpu_deterministic_ops``), at a speed cost that depends on the network; on
  a CPU every program is deterministic already and the switch changes nothing.

`record` is what the results say about it.
"""

from __future__ import annotations

import os

import jax

from jaxshrink.core import errors

GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge  # JAX exposes no public test of this

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        return True


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def apply(batch_cfg) -> None:
    """Sets `batch.cpu_threads` and `batch.deterministic` for the backend, before it
    starts; once it has started, checks that it was started with them.

    Raises:
      errors.ConfigError: the backend already runs with other settings.
    """
    threads = int(batch_cfg.cpu_threads)
    deterministic = bool(batch_cfg.deterministic)
    flags = os.environ.get("XLA_FLAGS", "")
    if not _backend_started():
        if threads:
            os.environ["NPROC"] = str(threads)
        if deterministic and GPU_FLAG not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {GPU_FLAG}".strip()
        return
    if threads and os.environ.get("NPROC") != str(threads):
        raise errors.ConfigError(
            f"batch.cpu_threads={threads}: JAX's CPU backend already started with "
            f"{cpu_threads()} threads; set it before the first JAX computation (or export "
            f"NPROC={threads} before starting Python), or leave it 0"
        )
    if deterministic and jax.default_backend() == "gpu" and GPU_FLAG not in flags:
        raise errors.ConfigError(
            "batch.deterministic: JAX's GPU backend already started without deterministic "
            f"kernels; set it before the first JAX computation (or add {GPU_FLAG} to "
            "XLA_FLAGS before starting Python)"
        )


def cpu_threads() -> int:
    """The size of XLA's CPU thread pool in this process: ``NPROC`` or the cores this
    process may use, at least its CPU device count."""
    try:
        base = int(os.environ["NPROC"])
    except (KeyError, ValueError):
        base = _cores()
    try:
        local = len(jax.local_devices(backend="cpu"))
    except RuntimeError:  # pragma: no cover - no CPU backend
        local = 1
    return max(base, local)


def record(batch_cfg) -> dict:
    """What a run's results say about its reproducibility: whether its numbers are the
    same bits on every layout and rerun, and under which condition."""
    backend = jax.default_backend()
    threads = cpu_threads()
    if backend == "cpu":
        bits = True
        condition = (
            f"the same bits on any layout of up to {threads} devices per process and on "
            f"any machine whose XLA CPU pool has {threads} threads (batch.cpu_threads)"
        )
    else:
        bits = bool(batch_cfg.deterministic)
        condition = (
            "the same bits on any layout (deterministic GPU kernels)"
            if bits
            else "equal to rounding: GPU reductions may sum in a different order on each "
            "call; batch.deterministic=True gives bits"
        )
    return {
        "backend": backend,
        "bitwise": bits,
        "cpu_threads": threads,
        "deterministic": bool(batch_cfg.deterministic),
        "condition": condition,
    }
