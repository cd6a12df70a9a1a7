"""Batch norm, transposed convolutions and augmentation in the shrinking machinery:
state beside the params, rollback, vmapped runs, checkpoints, export, purity."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import load_config

from jaxshrink.core import augment, models, optim, train
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.models import sequential
from jaxshrink.deploy import export
from jaxshrink.runtime import checkpoint
from jaxshrink.search import batching, minimize

LAYERS = ("conv:4:3:bn", "maxpool:3:s2:same", "convT:3:3:s2:bn", "dense:5:bn", "dense:2")
SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def model():
    return models.sequential_model(LAYERS, SHAPE, init_std=0.3)


def _random_state(model, key):
    """Params and batch-norm statistics with every entry random (var > 0)."""
    params, state = model.init_variables(key)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [
        jax.random.uniform(k, leaf.shape, minval=0.2, maxval=2.0) for k, leaf in zip(keys, leaves)
    ]
    return params, jax.tree.unflatten(tree, leaves)


def test_a_batch_norm_belongs_to_the_layer_before_it(model):
    conv = model.spec.layer("conv_0")
    owned = [(leaf.collection, leaf.path) for leaf in conv.owns]
    assert owned == [
        ("params", ("conv_0", "kernel")),
        ("params", ("conv_0", "bias")),
        ("params", ("conv_0_bn", "scale")),
        ("params", ("conv_0_bn", "bias")),
        ("batch_stats", ("conv_0_bn", "mean")),
        ("batch_stats", ("conv_0_bn", "var")),
    ]
    assert [leaf.path for leaf in model.spec.layer("dense_1").owns] == [
        ("dense_1", "kernel"),
        ("dense_1", "bias"),
    ]
    # conv 8x8 -> pool 3/2 'SAME' 4x4 -> convT stride 2 8x8: input pixels are positions.
    assert model.spec.layer("convT_0").positions == 4 * 4
    assert model.spec.layer("dense_0").in_features == 8 * 8 * 3


def test_freezing_a_unit_freezes_its_scale_and_bias_and_cosine_rows_include_them(model):
    params, _ = model.init_variables(jax.random.PRNGKey(0))
    frozen = spec_lib.full(model.spec, False)
    frozen["conv_0"] = jnp.array([False, True, False, False])
    tree = spec_lib.expand(model.spec, frozen, params)
    assert np.asarray(tree["conv_0_bn"]["scale"]).tolist() == [False, True, False, False]
    assert np.asarray(tree["conv_0_bn"]["bias"]).tolist() == [False, True, False, False]
    grads = jax.tree.map(jnp.ones_like, params)
    cfg = ml_collections.ConfigDict(
        {
            "name": "sgd",
            "learning_rate": 1.0,
            "weight_decay": 0.0,
            "weight_decay_mode": "l2",
            "l1": 0.0,
            "frozen_layers": (),
        }
    )
    tx = optim.make_optimizer(cfg, model.spec, params)
    updates, _ = tx.update(grads, tx.init(params), params, frozen=frozen)
    assert np.asarray(updates["conv_0_bn"]["scale"]).tolist() == [-1.0, 0.0, -1.0, -1.0]
    rows = spec_lib.unit_vectors(model.spec, params, spec_lib.full(model.spec), "conv_0")
    assert rows.shape == (4, 3 * 3 * 1 + 1 + 2)  # kernel, bias, bn scale, bn bias
    np.testing.assert_array_equal(rows[:, -2], params["conv_0_bn"]["scale"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_equals_exported_with_batch_norm_and_transposed_convolutions(model, seed):
    key = jax.random.PRNGKey(seed)
    params, state = _random_state(model, key)
    masks = {
        layer.name: jax.random.bernoulli(jax.random.fold_in(key, i), 0.6, (layer.units,))
        for i, layer in enumerate(model.spec.layers)
    }
    masks = {name: m.at[0].set(True) for name, m in masks.items()}  # one unit stays per layer
    masks["dense_1"] = jnp.ones(2, bool)
    x = jax.random.normal(jax.random.fold_in(key, 99), (3, *SHAPE))
    want = model.apply(params, masks, x, state=state)
    small = export.compact(model.spec, params, masks)
    small_state = export.compact_state(model.spec, state, masks)
    compact = model.at_widths(model.spec.widths(masks))
    got = compact.apply(small, spec_lib.full(compact.spec), x, state=small_state)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    kept = int(np.sum(masks["conv_0"]))
    assert small_state["batch_stats"]["conv_0_bn"]["mean"].shape == (kept,)
    np.testing.assert_array_equal(
        small_state["batch_stats"]["conv_0_bn"]["var"],
        np.asarray(state["batch_stats"]["conv_0_bn"]["var"])[np.asarray(masks["conv_0"])],
    )


def test_export_writes_the_kept_statistics_and_checks_them(model, tmp_path):
    params, state = _random_state(model, jax.random.PRNGKey(3))
    masks = spec_lib.full(model.spec)
    masks["convT_0"] = jnp.array([True, False, True])
    x = jax.random.normal(jax.random.PRNGKey(4), (2, *SHAPE))
    report = export.export(str(tmp_path), model, params, masks, x, state=state)
    assert report.widths == (4, 2, 5, 2)
    stats = export.load(str(tmp_path), "state")
    assert stats["batch_stats"]["convT_0_bn"]["mean"].shape == (2,)
    compact = model.at_widths(model.spec.widths(masks))
    out = compact.apply(export.load(str(tmp_path)), spec_lib.full(compact.spec), x, state=stats)
    np.testing.assert_allclose(
        out, model.apply(params, masks, x, state=state), rtol=1e-5, atol=1e-6
    )


def test_training_moves_the_statistics_and_evaluation_uses_them(model):
    params, state = model.init_variables(jax.random.PRNGKey(0))
    masks = spec_lib.full(model.spec)
    x = 3.0 + jax.random.normal(jax.random.PRNGKey(1), (4, *SHAPE))
    _, new = model.train_apply(params, state, masks, x)
    mean = np.asarray(new["batch_stats"]["conv_0_bn"]["mean"])
    # One step of an exponential moving average from 0 with momentum 0.99.
    conv = jax.lax.conv_general_dilated(
        x, params["conv_0"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    batch_mean = np.asarray(jnp.mean(conv + params["conv_0"]["bias"], axis=(0, 1, 2)))
    np.testing.assert_allclose(mean, (1 - sequential.BN_MOMENTUM) * batch_mean, rtol=1e-4)
    assert not np.allclose(
        model.apply(params, masks, x, state=state), model.apply(params, masks, x, state=new)
    )


def _bn_config():
    c = load_config("mnist", "quick")
    c.model.layers = ("conv:4:3:s2:bn", "dense:6:bn", "dropout:0.5", "dense:10")
    c.train.batch_size = 4
    c.minimize.round_steps = 3
    c.batch.method, c.batch.grad = "vmap", "sum"  # runs vmapped, as on a GPU
    return c


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    return train.TrainData(jnp.asarray(x), jnp.asarray(y))


@pytest.fixture(scope="module")
def engine():
    c = _bn_config()
    trainer = train.from_config(c, SHAPE)
    eng = batching.make_engine(trainer, c.batch)
    return c, eng._replace(train=jax.jit(eng.train))  # one compilation cache for all


def test_runs_under_vmap_keep_their_own_statistics(engine):
    c, eng = engine
    d = _data()
    tx, model = eng.trainer.tx, eng.trainer.model
    # One step: its running statistics come from the initial network, which the batch
    # and the single run compute alike to float rounding. (Over several steps Adam
    # turns rounding in near-zero gradients into differences of the learning rate's
    # size, so a batched run and a single one part by more than rounding.)
    states = train.create_train_states([0, 1], model, tx)
    out, _ = eng.train(states, d, jnp.array([1, 1]))
    for r in range(2):
        single = train.create_train_states([r], model, tx)
        alone, _ = eng.train(single, d, jnp.array([1]))
        for a, b in zip(
            jax.tree.leaves(batching.take(out, r).model_state),
            jax.tree.leaves(batching.take(alone, 0).model_state),
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    first, second = (batching.take(out, r).model_state for r in range(2))
    assert not np.allclose(
        first["batch_stats"]["dense_0_bn"]["mean"], second["batch_stats"]["dense_0_bn"]["mean"]
    )
    # A run that takes no step keeps its initial statistics exactly.
    idle, _ = eng.train(states, d, jnp.array([5, 0]))
    for a, b in zip(
        jax.tree.leaves(batching.take(idle, 1).model_state),
        jax.tree.leaves(batching.take(states, 1).model_state),
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threshold, restored", [(10.0, True), (0.0, False)])
def test_rollback_restores_the_statistics_bit_for_bit(engine, threshold, restored):
    c, eng = engine
    d, ev = _data(), train.make_eval_data(_data(8, seed=1), 4)
    model = eng.trainer.model
    states = train.create_train_states([0], model, eng.trainer.tx)
    states, _ = eng.train(states, d, jnp.array([4]))
    run = batching.take(states, 0)
    # Reference accuracy 1: no score clears 10x it, any clears 0x.
    ms = minimize.init_state(model.spec, run, jnp.float32(1.0), jax.random.PRNGKey(1))
    spec = minimize.run_spec(c.minimize)._replace(threshold=jnp.float32(threshold))
    one = lambda t: jax.tree.map(lambda a: jnp.asarray(a)[None], t)  # noqa: E731
    new, rec = jax.jit(minimize.make_round(c, eng))(one(ms), one(spec), d, ev)
    assert bool(rec.accepted[0]) is not restored
    after = batching.take(new, 0).run.model_state
    same = [
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(run.model_state))
    ]
    assert all(same) if restored else not any(same)


def test_checkpoints_hold_the_statistics(engine, tmp_path):
    _, eng = engine
    states = train.create_train_states([0, 1], eng.trainer.model, eng.trainer.tx)
    states, _ = eng.train(states, _data(), jnp.array([3, 3]))
    ckpt = checkpoint.RunCheckpointer(str(tmp_path / "c"))
    ckpt.save(3, states, {"stage": "train"})
    ckpt.close()
    fresh = train.create_train_states([0, 1], eng.trainer.model, eng.trainer.tx)
    step, restored, _ = checkpoint.RunCheckpointer(str(tmp_path / "c")).restore_latest(fresh)
    assert step == 3
    for a, b in zip(jax.tree.leaves(restored.model_state), jax.tree.leaves(states.model_state)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------- augmentation


def _augmented_trainer():
    c = _bn_config()
    c.augment = augment.thesis_003_cifar()
    c.augment.crop = 6
    return train.from_config(c, (6, 6, 1))


def test_augmentation_is_a_pure_function_of_seed_and_step():
    trainer = _augmented_trainer()
    d = _data()
    states = [
        train.create_train_state(jax.random.PRNGKey(s), trainer.model, trainer.tx)
        for s in (0, 0, 1)
    ]
    sample = jax.jit(trainer.sample)
    a, b, other = (sample(s, d)[0] for s in states)
    assert a.shape == (4, 6, 6, 1)
    np.testing.assert_array_equal(a, b)  # same seed, same step: same bits
    assert not np.allclose(a, other)  # another seed
    later = sample(states[0].replace(step=jnp.int32(1)), d)[0]
    assert not np.allclose(a, later)  # another step
    # Standardised per image, as the eval transform (central crop) is.
    np.testing.assert_allclose(np.mean(np.asarray(a), axis=(1, 2, 3)), 0.0, atol=1e-5)
    ev = trainer.eval_transform(d.inputs[:2])
    assert ev.shape == (2, 6, 6, 1)


def test_an_augmented_run_resumes_to_the_same_bits():
    trainer = _augmented_trainer()
    eng = batching.make_engine(trainer, _bn_config().batch)
    d = _data()
    states = train.create_train_states([0], trainer.model, trainer.tx)
    run = eng.train
    straight, _ = run(states, d, jnp.array([6]))
    half, _ = run(states, d, jnp.array([2]))
    resumed, _ = run(half, d, jnp.array([4]))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)


def test_layer_string_options_are_checked():
    with pytest.raises(ValueError, match="unknown option 'bm'"):
        sequential.parse("conv:4:3:bm")
    with pytest.raises(ValueError, match="unknown option 'bn'"):
        sequential.parse("maxpool:2:bn")
    assert sequential.parse("maxpool:3:s2:same") == ("maxpool", ["3", "s2", "same"])


@pytest.mark.parametrize(
    "name, arg, field, value, fragment",
    [
        ("autoencoder", "quick", "flip", True, "unless the task is 'classification'"),
        ("cifar10", "t003", "crop", 40, "does not fit"),
        ("cifar10", "t003", "contrast", (1.8, 0.2), "lower <= upper"),
    ],
)
def test_bad_augmentation_is_a_config_error(name, arg, field, value, fragment):
    from jaxshrink.config import validate
    from jaxshrink.core import errors

    c = load_config(name, arg)
    c.augment[field] = value
    with pytest.raises(errors.ConfigError, match="augment") as info:
        validate.validate(c)
    assert fragment in str(info.value)
