"""Steps driven from the host (`batch.steps='host'`, the CPU default) against the compiled loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxshrink import data
from jaxshrink.core import train
from jaxshrink.search import batching, minimize


@pytest.fixture(scope="module")
def setup():
    c = tiny_config("canny")
    dataset = data.load_dataset(c.data)
    trainer = train.from_config(c, data.input_shape(c.data))
    engine = batching.make_engine(trainer, c.batch, backend="cpu")
    d = train.make_train_data(dataset.train)
    ev = train.make_eval_data(dataset.eval, 4)
    states = train.create_train_states([0, 1, 2], trainer.model, trainer.tx)
    return c, engine, d, ev, states


def _close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_the_host_loop_takes_the_compiled_loops_steps(setup):
    c, engine, d, ev, states = setup
    steps = np.array([4, 0, 2], np.int32)
    want, want_loss = jax.jit(engine.train)(states, d, jnp.asarray(steps))
    got, got_loss = batching.host_train(engine.trainer)(states, d, steps)
    _close(got.params, want.params)
    _close(got.opt_state, want.opt_state)
    np.testing.assert_array_equal(got.step, [4, 0, 2])
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    assert float(got_loss[1]) == 0.0
    # A run given no steps is untouched, bit for bit.
    for x, y in zip(
        jax.tree.leaves(batching.take(got, 1)), jax.tree.leaves(batching.take(states, 1))
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_run_alone_and_in_a_batch_take_the_same_bits(setup):
    c, engine, d, ev, states = setup
    host = batching.host_train(engine.trainer)
    batch, _ = host(states, d, np.array([3, 3, 3]))
    alone, _ = host(batching.stack([batching.take(states, 2)]), d, np.array([3]))
    for x, y in zip(jax.tree.leaves(batching.take(batch, 2)), jax.tree.leaves(alone)):
        np.testing.assert_array_equal(np.asarray(x)[None], np.asarray(y))


def test_a_host_round_decides_as_the_compiled_round(setup):
    c, engine, d, ev, states = setup
    trained, _ = jax.jit(engine.train)(states, d, jnp.full((3,), 20, jnp.int32))
    scores = jax.jit(engine.evaluate)(trained.params, trained.model_state, trained.masks, ev)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(3)])
    ms = jax.vmap(lambda r, b, k: minimize.init_state(engine.trainer.model.spec, r, b, k))(
        trained, scores["score"], keys
    )
    specs = batching.stack([minimize.run_spec(c.minimize, threshold=t) for t in (0.01, 10.0, 0.5)])
    ms = ms.replace(done=ms.done.at[2].set(True))  # a stopped run trains nothing
    compiled = jax.jit(minimize.make_round(c, engine))
    host = minimize.make_host_round(c, engine, batching.host_train(engine.trainer))
    want, want_rec = compiled(ms, specs, d, ev)
    got, got_rec = host(ms, specs, d, ev)
    for field in ("active", "candidate", "accepted", "kind", "count"):
        np.testing.assert_array_equal(getattr(got_rec, field), getattr(want_rec, field))
    np.testing.assert_allclose(got_rec.score, want_rec.score, rtol=1e-4)
    np.testing.assert_array_equal(got.run.masks["conv_0"], want.run.masks["conv_0"])
    _close(got.run.params, want.run.params, rtol=1e-4, atol=1e-5)


def test_steps_resolve_to_the_host_on_a_cpu_whatever_the_layout():
    cfg = tiny_config().batch
    assert batching.resolve_steps(cfg, "cpu") == "host"
    assert batching.resolve_steps(cfg, "gpu") == "compiled"
    cfg.steps = "compiled"
    assert batching.resolve_steps(cfg, "cpu") == "compiled"


def test_steps_follow_the_convolutions_a_step_holds():
    cfg = tiny_config().batch
    # A step of direct convolutions only keeps the compiled loop on a CPU.
    assert batching.resolve_steps(cfg, "cpu", xla_convs=False) == "compiled"
    assert batching.resolve_steps(cfg, "cpu", xla_convs=True) == "host"
    assert batching.needs_convolution_count(cfg, "cpu")
    assert not batching.needs_convolution_count(cfg, "gpu")
    cfg.steps = "host"
    assert not batching.needs_convolution_count(cfg, "cpu")
    assert batching.resolve_steps(cfg, "cpu", xla_convs=False) == "host"


@pytest.mark.parametrize(
    "conv, crop, want",
    [
        # XLA's convolutions: 3 forward, 3 kernel gradients, and the input gradients
        # of the 2nd and 3rd layers (the image itself takes no gradient).
        ("xla", 16, 8),
        ("direct", 16, 0),  # every layer direct, forward and backward
        # 3 images of 160x160 = 76,800 positions > convs.DIRECT_MAX_REDUCED: each
        # layer's kernel gradient is XLA's (its `jax.vjp` traces a forward too).
        ("direct", 160, 6),
    ],
)
def test_xla_convolutions_counts_a_steps_convolutions(conv, crop, want):
    c = tiny_config("canny")
    c.model.conv, c.data.crop_size = conv, crop
    trainer = train.from_config(c, (crop, crop, 1))
    d = train.TrainData(jnp.zeros((4, crop, crop, 1)), jnp.zeros((4, crop, crop, 1)))
    assert batching.xla_convolutions(trainer, d) == want


def test_a_job_of_direct_convolutions_loops_its_steps_in_the_compiled_program(tmp_path):
    from jaxshrink.runtime import stages
    from jaxshrink.runtime.job import Job

    c = tiny_config("canny")
    c.train.initial_steps, c.train.log_every, c.train.eval_every = 6, 3, 3
    jobs = {}
    for conv in ("direct", "xla"):
        c.model.conv = conv
        jobs[conv] = Job(c, str(tmp_path / conv), lambda msg: None)
    assert (jobs["direct"].steps, jobs["xla"].steps) == ("compiled", "host")
    assert "steps looped in the compiled program" in jobs["direct"].describe()
    got, want = (stages.train_stage(jobs[conv], [0, 1]) for conv in ("direct", "xla"))
    _close(got.params, want.params, rtol=1e-4, atol=1e-6)
