"""The physically smaller network of plain Flax modules that know nothing of masks: it
computes what the masked network computes, its leaves have exactly the kept widths,
its size agrees with `count`, and what cannot be made exactly is refused by name."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.core import graph as graph_lib
from jaxshrink.core import shrink


class FlattenHead(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3), name="conv_0")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(4, (3, 3), name="conv_1")(x))
        return nn.Dense(5, name="dense")(x.reshape(x.shape[0], -1))


class Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
        stem = nn.Conv(4, (3, 3), name="stem")(x)
        h = nn.relu(nn.Conv(4, (3, 3), name="block_0")(stem))
        h = nn.Conv(4, (3, 3), name="block_1")(h)
        x = nn.relu(stem + h).mean(axis=(1, 2))
        x = nn.relu(nn.Dense(8, name="dense_0")(x))
        return nn.Dense(3, name="dense_1")(x)


class Concat(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = nn.relu(nn.Conv(2, (3, 3), name="conv_a")(x))
        b = nn.relu(nn.Conv(3, (3, 3), name="conv_b")(x))
        return nn.Conv(2, (3, 3), name="conv_c")(jnp.concatenate([a, b], axis=-1))


class Separable(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        x = nn.relu(nn.Conv(4, (3, 3), feature_group_count=4, name="depthwise")(x))
        return nn.Conv(3, (1, 1), name="point")(x)


class Norms(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv_0")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(x))
        x = nn.LayerNorm(name="ln")(x)
        return nn.Conv(2, (3, 3), name="conv_1")(x)


class Transposed(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2, name="down")(x))
        x = nn.relu(nn.ConvTranspose(3, (3, 3), strides=(2, 2), name="up")(x))
        return nn.Conv(1, (3, 3), name="out")(x)


class Sigmoid(nn.Module):
    """A disabled channel leaves sigmoid(0) = 0.5, which the next layer reads."""

    @nn.compact
    def __call__(self, x):
        x = nn.sigmoid(nn.Conv(4, (3, 3), name="conv_0")(x))
        return nn.Conv(2, (3, 3), name="conv_1")(x)


def _setup(module, shape, seed=0):
    """Random variables of the module's shapes (running statistics included, variances
    positive; drawn on the host, no initializer is compiled), its graph, an input."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(seed), x)
    fresh = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        value = rng.normal(size=leaf.shape).astype(np.float32)
        fresh.append(jnp.asarray(np.abs(value) + 0.5 if path[-1].key == "var" else value))
    variables = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), fresh)
    return variables, graph_lib.channel_groups(module.apply, variables, x), x


def _draw(graph, rng):
    """A random keep vector per removable group, at least one channel kept in each."""
    keep = []
    for group in graph.groups:
        if not group.removable:
            keep.append(None)
            continue
        mask = rng.random(group.size) < 0.5
        mask[rng.integers(group.size)] = True
        keep.append(mask)
    return keep


def _masker(graph):
    """``masked(variables, keep)``: the variables times the graph's multipliers (one
    compiled function for every keep of a graph)."""

    def masked(variables, keep):
        return jax.tree.map(lambda v, m: v * m, variables, graph.masks_to_variables(keep))

    return jax.jit(masked)


def _masked(graph, variables, keep):
    return _masker(graph)(variables, keep)


def _kept(graph, keep, path, axis):
    """How many entries of `axis` of the leaf at `path` are kept (by hand: the group's
    channel count times its entries per channel)."""
    group = graph.group_of(path, axis)
    mask = keep[graph.groups.index(group)]
    s = group.slice(path, axis)
    return sum(len(e) for e, k in zip(s.indices, mask) if k)


def _shape(small, path):
    leaf = small
    for key in path:
        leaf = leaf[key]
    return tuple(np.shape(leaf))


P = "params"

CASES = {
    "flatten": (
        FlattenHead(),
        (2, 6, 6, 1),
        lambda n: {
            (P, "conv_0", "kernel"): (3, 3, 1, n((P, "conv_0", "kernel"), 3)),
            (P, "conv_1", "kernel"): (
                3,
                3,
                n((P, "conv_0", "kernel"), 3),
                n((P, "conv_1", "bias"), 0),
            ),
            # 3 x 3 pixels after the pooling, each feeding the kept channels
            (P, "dense", "kernel"): (9 * n((P, "conv_1", "bias"), 0), 5),
        },
    ),
    "residual": (
        Residual(),
        (2, 6, 6, 1),
        lambda n: {
            (P, "stem", "kernel"): (3, 3, 1, n((P, "stem", "bias"), 0)),
            (P, "block_0", "kernel"): (
                3,
                3,
                n((P, "stem", "bias"), 0),
                n((P, "block_0", "bias"), 0),
            ),
            (P, "block_1", "kernel"): (
                3,
                3,
                n((P, "block_0", "bias"), 0),
                n((P, "stem", "bias"), 0),
            ),
            (P, "dense_0", "kernel"): (n((P, "stem", "bias"), 0), n((P, "dense_0", "bias"), 0)),
            (P, "dense_1", "kernel"): (n((P, "dense_0", "bias"), 0), 3),
        },
    ),
    "concat": (
        Concat(),
        (2, 5, 5, 1),
        lambda n: {
            (P, "conv_c", "kernel"): (
                3,
                3,
                n((P, "conv_a", "bias"), 0) + n((P, "conv_b", "bias"), 0),
                2,
            ),
        },
    ),
    "separable": (
        Separable(),
        (2, 5, 5, 1),
        lambda n: {
            (P, "depthwise", "kernel"): (3, 3, 1, n((P, "conv", "bias"), 0)),
            (P, "depthwise", "bias"): (n((P, "conv", "bias"), 0),),
            (P, "point", "kernel"): (1, 1, n((P, "conv", "bias"), 0), 3),
        },
    ),
    "norms": (
        Norms(),
        (2, 5, 5, 1),
        lambda n: {
            ("batch_stats", "bn", "var"): (n((P, "conv_0", "bias"), 0),),
            (P, "ln", "scale"): (n((P, "conv_0", "bias"), 0),),
            (P, "conv_1", "kernel"): (3, 3, n((P, "conv_0", "bias"), 0), 2),
        },
    ),
    "transposed": (
        Transposed(),
        (2, 8, 8, 1),
        lambda n: {
            (P, "up", "kernel"): (3, 3, n((P, "down", "bias"), 0), n((P, "up", "bias"), 0)),
            (P, "out", "kernel"): (3, 3, n((P, "up", "bias"), 0), 1),
        },
    ),
    "sigmoid": (
        Sigmoid(),
        (2, 5, 5, 1),
        lambda n: {(P, "conv_1", "kernel"): (3, 3, n((P, "conv_0", "bias"), 0), 2)},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_small_network_computes_the_masked_one_at_the_kept_widths(name):
    module, shape, expected = CASES[name]
    variables, graph, x = _setup(module, shape)
    assert graph.removable, name
    rng = np.random.default_rng(0)
    apply, masked = jax.jit(module.apply), _masker(graph)  # the reference
    for _ in range(5):
        keep = _draw(graph, rng)
        small_fn, small = shrink.smaller(module.apply, variables, (x,), graph, keep)
        want = apply(masked(variables, keep), x)
        np.testing.assert_allclose(jax.jit(small_fn)(small, x), want, rtol=1e-5, atol=1e-5)
        for path, leaf_shape in expected(lambda p, a, keep=keep: _kept(graph, keep, p, a)).items():
            assert _shape(small, path) == leaf_shape, (name, path)
        before, after = shrink.count(graph, variables, keep)
        assert before == sum(math.prod(np.shape(v)) for v in jax.tree.leaves(variables))
        assert after == sum(math.prod(np.shape(v)) for v in jax.tree.leaves(small))
    # The program runs as well op by op, outside `jit`.
    np.testing.assert_allclose(small_fn(small, x), want, rtol=1e-5, atol=1e-5)


def test_a_disabled_channel_that_leaves_a_constant_is_still_computed_exactly():
    """sigmoid(0) = 0.5 on a removed channel reaches conv_1 in the masked network; a
    small network that merely dropped the channel would miss it."""
    module = Sigmoid()
    variables, graph, x = _setup(module, (2, 5, 5, 1))
    keep = [np.array([True, False, True, False]), None]
    small_fn, small = shrink.smaller(module.apply, variables, (x,), graph, keep)
    want = module.apply(_masked(graph, variables, keep), x)
    np.testing.assert_allclose(small_fn(small, x), want, rtol=1e-5, atol=1e-5)
    # Dropping the channels alone (the same small leaves, no constant) is not it.
    p = small["params"]

    def conv(h, layer):
        dn = ("NHWC", "HWIO", "NHWC")
        out = jax.lax.conv_general_dilated(
            h, p[layer]["kernel"], (1, 1), "SAME", dimension_numbers=dn
        )
        return out + p[layer]["bias"]

    dropped = conv(jax.nn.sigmoid(conv(x, "conv_0")), "conv_1")
    assert np.abs(np.asarray(dropped) - np.asarray(want)).max() > 1e-2


@pytest.mark.parametrize("name", ["flatten", "residual", "norms"])
def test_everything_kept_gives_the_same_leaves_and_the_same_output(name):
    module, shape, _ = CASES[name]
    variables, graph, x = _setup(module, shape)
    small_fn, small = shrink.smaller(module.apply, variables, (x,), graph, graph.full_masks())
    assert all(a is b for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(small)))
    np.testing.assert_array_equal(small_fn(small, x), module.apply(variables, x))
    before, after = shrink.count(graph, variables, graph.full_masks())
    assert before == after


def test_disabling_residual_channels_shrinks_the_stem_and_the_block_together():
    module = Residual()
    variables, graph, x = _setup(module, (2, 6, 6, 1))
    shared = graph.group_of((P, "stem", "kernel"), 3)
    index = graph.groups.index(shared)
    for mask in ([True, False, True, False], [False] * 4):
        keep = graph.full_masks()
        keep[index] = np.array(mask)
        small_fn, small = shrink.smaller(module.apply, variables, (x,), graph, keep)
        k = sum(mask)
        p = small["params"]
        assert p["stem"]["kernel"].shape == (3, 3, 1, k) and p["stem"]["bias"].shape == (k,)
        assert p["block_1"]["kernel"].shape == (3, 3, 4, k) and p["block_1"]["bias"].shape == (k,)
        assert p["block_0"]["kernel"].shape == (3, 3, k, 4)
        assert p["dense_0"]["kernel"].shape == (k, 8)
        kept = np.flatnonzero(mask)
        np.testing.assert_array_equal(
            p["stem"]["kernel"], np.asarray(variables["params"]["stem"]["kernel"])[..., kept]
        )
        want = module.apply(_masked(graph, variables, keep), x)
        np.testing.assert_allclose(small_fn(small, x), want, rtol=1e-5, atol=1e-5)


class SlowVariance(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv_0")(x))
        x = nn.LayerNorm(use_fast_variance=False, name="ln")(x)
        return nn.Conv(2, (3, 3), name="conv_1")(x)


class ArgMax(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.argmax(nn.Conv(4, (3, 3), name="conv")(x), axis=-1)


@pytest.mark.parametrize(
    "module, match",
    [
        # var = mean((x - mean)**2): a removed channel adds mean**2, which is data.
        (SlowVariance(), "'reduce_sum' .*ln.*depend on the data"),
        # An index along the channels means other channels once some are gone.
        (ArgMax(), "'argmax' .*an index along an axis that lost channels"),
    ],
)
def test_what_cannot_be_made_exactly_is_refused_by_name(module, match):
    variables, graph, x = _setup(module, (2, 5, 5, 1))
    keep = [np.array([True, False, True, True]) if g.removable else None for g in graph.groups]
    with pytest.raises(shrink.ShrinkError, match=match):
        shrink.smaller(module.apply, variables, (x,), graph, keep)


def test_wrong_keep_vectors_and_other_shapes_are_refused():
    module = FlattenHead()
    variables, graph, x = _setup(module, (2, 6, 6, 1))
    keep = graph.full_masks()
    assert keep[-1] is None
    keep[-1] = np.array([True, False, True, True, True])
    with pytest.raises(ValueError, match="not removable"):
        shrink.smaller(module.apply, variables, (x,), graph, keep)
    with pytest.raises(ValueError, match="keep vectors"):
        shrink.count(graph, variables, keep[:-1])
    small_fn, small = shrink.smaller(module.apply, variables, (x,), graph, graph.full_masks())
    with pytest.raises(ValueError, match="tied to the shapes"):
        small_fn(small, x[:1])
    other, _, _ = _setup(Residual(), (2, 6, 6, 1))
    with pytest.raises(ValueError, match="not made from this function"):
        shrink.smaller(Residual().apply, other, (x,), graph, graph.full_masks())
