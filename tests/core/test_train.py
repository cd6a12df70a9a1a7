"""Training steps, freezing during training, evaluation and checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink import data
from jaxshrink.config import schema as config_lib
from jaxshrink.core import metrics, train
from jaxshrink.runtime import checkpoint
from jaxshrink.search import batching


def _config():
    c = config_lib.base_config("sobel")
    c.model.num_filters = 3
    c.train.batch_size = 2
    c.train.eval_batch_size = 3
    c.optim.learning_rate = 1e-2
    return c


def _split(n, seed, size=12):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(n, size, size, 1)).astype(np.float32)
    targets = np.stack([data.edge_targets.sobel_target(im[..., 0]) for im in images])[..., None]
    return data.Split(images, targets.astype(np.float32), tuple(f"s{seed}-{i}" for i in range(n)))


class _One:
    """The batched engine driven as a single run (the batch of one)."""

    def __init__(self, c, method="loop"):
        self.trainer = train.from_config(c, (12, 12, 1))
        c = c.copy_and_resolve_references()
        c.batch.method = method
        self.engine = batching.make_engine(self.trainer, c.batch)
        self.train = jax.jit(self.engine.train)

    def train_steps(self, state, d, n):
        batch = jax.tree.map(lambda a: a[None], state)
        out, loss = self.train(batch, d, jnp.array([n]))
        return batching.take(out, 0), loss[0]

    def evaluate(self, params, masks, ev):
        return self.trainer.evaluate(params, {}, masks, ev)

    def predict(self, params, masks, x):
        return self.trainer.predict(params, {}, masks, x)


def _setup():
    c = _config()
    trainer = _One(c)
    state = train.create_train_state(
        jax.random.PRNGKey(0), trainer.trainer.model, trainer.trainer.tx
    )
    return c, trainer, state


def test_training_reduces_loss_and_counts_steps():
    c, trainer, state = _setup()
    d = train.make_train_data(_split(8, 0))
    _, first = trainer.train_steps(state, d, 5)
    state, _ = trainer.train_steps(state, d, 200)
    _, later = trainer.train_steps(state, d, 5)
    assert int(state.step) == 200
    assert float(later) < float(first)


def test_batched_runs_match_single_runs_and_zero_steps_change_nothing():
    c = _config()
    d = train.make_train_data(_split(8, 6))
    one = _One(c)
    states = train.create_train_states([3, 4, 5], one.trainer.model, one.trainer.tx)
    for method in ("loop", "vmap"):
        for grad in ("sum", "vmap"):
            cfg = c.copy_and_resolve_references()
            cfg.batch.method, cfg.batch.grad = method, grad
            engine = batching.make_engine(one.trainer, cfg.batch)
            out, loss = jax.jit(engine.train)(states, d, jnp.array([7, 0, 4]))
            for r, n in enumerate((7, 0, 4)):
                single, single_loss = one.train_steps(batching.take(states, r), d, n)
                got = batching.take(out, r)
                assert int(got.step) == n
                for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(single)):
                    if n == 0 or method == "loop":
                        np.testing.assert_array_equal(x, y)  # same program per run
                    else:
                        np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6)
                np.testing.assert_allclose(loss[r], single_loss, rtol=1e-5)
            scores = engine.evaluate(
                out.params, out.model_state, out.masks, train.make_eval_data(_split(5, 7), 2)
            )
            assert scores["score"].shape == (3,)


def test_run_created_in_a_batch_equals_the_single_one():
    c = _config()
    one = _One(c)
    batch = train.create_train_states([0, 11], one.trainer.model, one.trainer.tx)
    single = train.create_train_state(jax.random.PRNGKey(11), one.trainer.model, one.trainer.tx)
    for x, y in zip(jax.tree.leaves(batching.take(batch, 1)), jax.tree.leaves(single)):
        np.testing.assert_array_equal(x, y)


def test_frozen_filter_unchanged_while_others_train():
    c, trainer, state = _setup()
    frozen = dict(state.frozen)
    frozen["conv_0"] = jnp.array([False, True, False])
    state = state.replace(frozen=frozen)
    before = state.params
    state, _ = trainer.train_steps(state, train.make_train_data(_split(8, 1)), 20)
    after = state.params
    np.testing.assert_array_equal(
        after["conv_0"]["kernel"][..., 1], before["conv_0"]["kernel"][..., 1]
    )
    np.testing.assert_array_equal(after["conv_0"]["bias"][1], before["conv_0"]["bias"][1])
    assert not np.array_equal(after["conv_0"]["kernel"][..., 0], before["conv_0"]["kernel"][..., 0])
    assert not np.array_equal(after["conv_2"]["kernel"], before["conv_2"]["kernel"])


def test_train_steps_compiles_once_for_any_length_and_mask():
    c, trainer, state = _setup()
    d = train.make_train_data(_split(4, 2))
    state, _ = trainer.train_steps(state, d, 3)
    masks = dict(state.masks)
    masks["conv_1"] = jnp.array([True, False, True])
    state = state.replace(masks=masks)
    state, _ = trainer.train_steps(state, d, 7)
    assert trainer.train._cache_size() == 1


def test_same_seed_same_result():
    c, trainer, state = _setup()
    d = train.make_train_data(_split(6, 3))
    a, _ = trainer.train_steps(state, d, 10)
    b, _ = trainer.train_steps(state, d, 10)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_evaluate_is_the_mean_over_the_whole_eval_split():
    c, trainer, state = _setup()
    split = _split(7, 4)  # 7 images in batches of 3: padding must not count
    ev = train.make_eval_data(split, 3)
    assert ev.inputs.shape[:2] == (3, 3)
    got = jax.jit(trainer.evaluate)(state.params, state.masks, ev)
    out = trainer.predict(state.params, state.masks, split.inputs)
    want_f1 = np.mean(np.asarray(metrics.f1_score_per_image(out, split.targets)))
    np.testing.assert_allclose(float(got["f1"]), want_f1, rtol=1e-5)
    np.testing.assert_allclose(float(got["mae"]), float(metrics.mae(out, split.targets)), rtol=1e-5)


def test_checkpoint_roundtrip_is_exact(tmp_path):
    c, trainer, state = _setup()
    state, _ = trainer.train_steps(state, train.make_train_data(_split(4, 5)), 3)
    ckpt = checkpoint.RunCheckpointer(str(tmp_path / "ckpt"))
    ckpt.save(3, state, {"stage": "train", "step": 3})
    assert ckpt.latest_step() == 3
    fresh = train.create_train_state(
        jax.random.PRNGKey(9), trainer.trainer.model, trainer.trainer.tx
    )
    restored, meta = ckpt.restore(3, fresh)
    assert meta == {"stage": "train", "step": 3}
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(x, y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
