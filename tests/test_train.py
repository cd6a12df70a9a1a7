"""Training steps, freezing during training, evaluation and checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink import checkpoint, data, metrics, train
from jaxshrink import config as config_lib


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
    targets = np.stack([data.sobel_target(im[..., 0]) for im in images])[..., None]
    return data.Split(images, targets.astype(np.float32), tuple(f"s{seed}-{i}" for i in range(n)))


def _setup():
    c = _config()
    rng = jax.random.PRNGKey(0)
    from jaxshrink import models

    trainer = train.make_trainer(c, jax.eval_shape(lambda: models.init(rng, c)))
    state = train.create_train_state(rng, c, trainer.tx)
    return c, trainer, state


def test_training_reduces_loss_and_counts_steps():
    c, trainer, state = _setup()
    d = train.make_train_data(_split(8, 0))
    _, first = trainer.train_steps(state, d, 5)
    state, _ = trainer.train_steps(state, d, 200)
    _, later = trainer.train_steps(state, d, 5)
    assert int(state.step) == 200
    assert float(later) < float(first)


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
    assert trainer.train_steps._cache_size() == 1


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
    assert ev.images.shape[:2] == (3, 3)
    got = trainer.evaluate(state.params, state.masks, ev)
    out = trainer.predict(state.params, state.masks, split.images)
    want_f1 = np.mean(np.asarray(metrics.f1_score_per_image(out, split.targets)))
    np.testing.assert_allclose(float(got["f1"]), want_f1, rtol=1e-5)
    np.testing.assert_allclose(float(got["mae"]), float(metrics.mae(out, split.targets)), rtol=1e-5)


def test_checkpoint_roundtrip_is_exact(tmp_path):
    c, trainer, state = _setup()
    state, _ = trainer.train_steps(state, train.make_train_data(_split(4, 5)), 3)
    ckpt = checkpoint.RunCheckpointer(str(tmp_path / "ckpt"))
    ckpt.save(3, state, {"stage": "train", "step": 3})
    assert ckpt.latest_step() == 3
    fresh = train.create_train_state(jax.random.PRNGKey(9), c, trainer.tx)
    restored, meta = ckpt.restore(3, fresh)
    assert meta == {"stage": "train", "step": 3}
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(x, y)
        assert np.asarray(x).dtype == np.asarray(y).dtype
