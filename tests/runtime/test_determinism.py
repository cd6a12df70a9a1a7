"""The same bits on any layout: a run alone equals the run in a batch, XLA's CPU thread
pool is what changes the rounding of its convolutions and `batch.cpu_threads` fixes it,
and the results say what holds."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, tiny_config

from jaxshrink.core import errors, models, tasks, train
from jaxshrink.runtime import determinism
from jaxshrink.search import batching, checks

# The first layer's kernel gradient of a small two-layer network: an XLA convolution
# whose sum is split over XLA's CPU thread pool.
_GRADIENT = """
import hashlib, sys, jax, jax.numpy as jnp, numpy as np
from jaxshrink.runtime import determinism
import ml_collections
b = ml_collections.ConfigDict(dict(cpu_threads=int(sys.argv[1]), deterministic=False))
determinism.apply(b)
k = jax.random.PRNGKey(0)
x = jax.random.normal(k, (3, 32, 32, 1))
w = jax.random.normal(jax.random.fold_in(k, 1), (5, 5, 1, 16))
w2 = jax.random.normal(jax.random.fold_in(k, 2), (5, 5, 16, 16))
dn = ("NHWC", "HWIO", "NHWC")
def f(w):
    y = jnp.tanh(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn))
    y = jax.lax.conv_general_dilated(y, w2, (1, 1), "SAME", dimension_numbers=dn)
    return jnp.sum(jnp.tanh(y) ** 2)
g = jax.jit(jax.grad(f))(w)
digest = hashlib.md5(np.asarray(g).tobytes()).hexdigest()
print(jax.device_count(), determinism.cpu_threads(), digest)
"""


def _gradient(devices: int, threads: int) -> tuple[int, int, str]:
    env = {k: v for k, v in os.environ.items() if k != "NPROC"}
    env.update(PYTHONPATH=ROOT, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    proc = subprocess.run(
        [sys.executable, "-c", _GRADIENT, str(threads)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, pool, digest = proc.stdout.split()
    return int(count), int(pool), digest


def test_the_cpu_thread_pool_sets_the_rounding_and_cpu_threads_fixes_it():
    cores = len(os.sched_getaffinity(0))
    one, four = _gradient(1, 0), _gradient(4, 0)
    # XLA's own pool: the cores, raised to the device count.
    assert one[:2] == (1, max(cores, 1)) and four[:2] == (4, max(cores, 4))
    if cores < 4:  # the pool grew with the forced devices, and the rounding with it
        assert one[2] != four[2]
    pinned_one, pinned_four = _gradient(1, 4), _gradient(4, 4)
    assert pinned_one[1] == pinned_four[1] == 4
    assert pinned_one[2] == pinned_four[2]  # the same bits on 1 and 4 devices


def test_a_run_alone_is_the_same_bits_as_in_a_batch():
    # vmap in groups of 2: run 1 alone (its group padded with copies of it) and run 1
    # as the second run of a batch of three share the program and its position.
    config = tiny_config()
    config.batch.method, config.batch.group_size = "vmap", 2
    model = models.get_model(config.model, (16, 16, 1))
    trainer = train.make_trainer(config, model, tasks.get_task(config.task))
    engine = batching.make_engine(trainer, config.batch)
    fn = batching.by_group(jax.jit(engine.train), (True, False, True), engine.group_size)
    rng = np.random.default_rng(0)
    split_x = rng.random((8, 16, 16, 1), np.float32)
    data = train.TrainData(jnp.asarray(split_x), jnp.asarray(split_x > 0.5, jnp.float32))
    states = train.create_train_states([5, 6, 7, 7], model, trainer.tx, None)
    batch, _ = fn(states, data, jnp.array([4, 4, 4, 0], jnp.int32))
    alone_states = batching.pad_runs(batching.take(states, slice(1, 2)), 2)
    alone, _ = fn(alone_states, data, jnp.array([4, 0], jnp.int32))
    for a, b in zip(
        jax.tree.leaves(batching.take(batch, 1)), jax.tree.leaves(batching.take(alone, 0))
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_switches_after_the_backend_started_are_refused_in_one_line(monkeypatch):
    jax.devices()  # the backend runs
    monkeypatch.delenv("NPROC", raising=False)
    b = tiny_config().batch
    determinism.apply(b)  # the defaults ask nothing
    b.cpu_threads = 3
    with pytest.raises(errors.ConfigError, match=r"batch.cpu_threads=3: .*NPROC=3"):
        determinism.apply(b)
    monkeypatch.setenv("NPROC", "3")  # started with it: nothing to refuse
    determinism.apply(b)
    c = tiny_config()
    c.batch.cpu_threads = -1
    with pytest.raises(errors.ConfigError, match="batch.cpu_threads"):
        checks.check_batch(c)


def test_the_record_says_what_holds_on_a_cpu(monkeypatch):
    monkeypatch.setenv("NPROC", "6")
    got = determinism.record(tiny_config().batch)
    assert got["backend"] == "cpu" and got["bitwise"] is True
    assert got["cpu_threads"] == max(6, jax.local_device_count())
    assert f"up to {got['cpu_threads']} devices per process" in got["condition"]
    assert got["deterministic"] is False
