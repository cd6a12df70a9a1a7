"""The channel dependency graph read from a jaxpr: groups written out by hand for plain
Flax modules that know nothing of masks (chains, a residual add, a flatten, a
concatenation, depthwise and grouped convolutions, norms), the primitives it refuses
to guess about, and the multipliers that disable a group's channels exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.core import graph as graph_lib

P, C, S = graph_lib.PRODUCER, graph_lib.CONSUMER, graph_lib.STATE


def _one_each(n: int) -> tuple:
    return tuple((k,) for k in range(n))


def _members(group) -> dict:
    """{'collection/layer/leaf:axis': (indices, roles)} of a group."""
    return {f"{'/'.join(s.path)}:{s.axis}": (s.indices, set(s.roles)) for s in group.slices}


def _graph(module, shape, *, seed=0):
    x = jnp.zeros(shape)
    variables = module.init(jax.random.key(seed), x)
    return graph_lib.channel_groups(module.apply, variables, x), variables


class Chain(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv_0")(x))
        x = nn.relu(nn.Conv(3, (3, 3), name="conv_1")(x))
        return nn.Conv(2, (3, 3), name="conv_2")(x)


class Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
        stem = nn.Conv(4, (3, 3), name="stem")(x)
        h = nn.relu(nn.Conv(4, (3, 3), name="block_0")(stem))
        h = nn.Conv(4, (3, 3), name="block_1")(h)
        x = nn.relu(stem + h)
        self.sow("intermediates", "after_add", x)
        x = x.mean(axis=(1, 2))
        x = nn.relu(nn.Dense(8, name="dense_0")(x))
        return nn.Dense(3, name="dense_1")(x)


def test_a_chain_has_one_group_per_hidden_layer_and_keeps_the_outputs():
    graph, _ = _graph(Chain(), (2, 6, 6, 1))
    assert [g.size for g in graph.groups] == [4, 3, 2]
    assert [g.removable for g in graph.groups] == [True, True, False]
    assert _members(graph.groups[0]) == {
        "params/conv_0/kernel:3": (_one_each(4), {P}),
        "params/conv_0/bias:0": (_one_each(4), {P}),
        "params/conv_1/kernel:2": (_one_each(4), {C}),
    }
    assert _members(graph.groups[1]) == {
        "params/conv_1/kernel:3": (_one_each(3), {P}),
        "params/conv_1/bias:0": (_one_each(3), {P}),
        "params/conv_2/kernel:2": (_one_each(3), {C}),
    }
    assert _members(graph.groups[2]) == {
        "params/conv_2/kernel:3": (_one_each(2), {P}),
        "params/conv_2/bias:0": (_one_each(2), {P}),
    }
    assert graph.groups[2].reasons == ("reaches the function's output",)
    assert graph.notes == ()
    assert hash(graph) == hash(graph)  # static data: usable as a jit's static argument
    lines = graph.describe().splitlines()
    assert len(lines) == 3 and "removable" in lines[0] and "kept" in lines[2]


def test_a_residual_add_joins_both_summands_producers_into_one_group():
    graph, _ = _graph(Residual(), (2, 6, 6, 1))
    assert [g.size for g in graph.groups] == [4, 4, 8, 3]
    assert [g.removable for g in graph.groups] == [True, True, True, False]
    shared, inner, hidden, out = graph.groups
    assert _members(shared) == {
        "params/stem/kernel:3": (_one_each(4), {P}),
        "params/stem/bias:0": (_one_each(4), {P}),
        "params/block_0/kernel:2": (_one_each(4), {C}),
        "params/block_1/kernel:3": (_one_each(4), {P}),
        "params/block_1/bias:0": (_one_each(4), {P}),
        "params/dense_0/kernel:0": (_one_each(4), {C}),
    }
    assert _members(inner) == {
        "params/block_0/kernel:3": (_one_each(4), {P}),
        "params/block_0/bias:0": (_one_each(4), {P}),
        "params/block_1/kernel:2": (_one_each(4), {C}),
    }
    assert _members(hidden) == {
        "params/dense_0/kernel:1": (_one_each(8), {P}),
        "params/dense_0/bias:0": (_one_each(8), {P}),
        "params/dense_1/kernel:0": (_one_each(8), {C}),
    }
    assert _members(out) == {
        "params/dense_1/kernel:1": (_one_each(3), {P}),
        "params/dense_1/bias:0": (_one_each(3), {P}),
    }
    assert graph.group_of(("params", "block_1", "bias"), 0, 2) is shared


class Flatten(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3), name="conv")(x))
        return nn.Dense(5, name="dense")(x.reshape(x.shape[0], -1))


def test_a_flatten_feeds_channel_c_to_every_third_dense_input():
    graph, _ = _graph(Flatten(), (2, 4, 4, 1))
    group = graph.groups[0]
    assert group.size == 3 and group.removable
    feed = group.slice(("params", "dense", "kernel"), 0)
    assert feed.indices == tuple(tuple(range(c, 48, 3)) for c in range(3))
    assert feed.roles == {C} and feed.length == 48
    assert [s.text() for s in group.producers] == ["params/conv/kernel:3", "params/conv/bias:0"]
    assert not graph.groups[1].removable


class Concat(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = nn.relu(nn.Conv(2, (3, 3), name="conv_a")(x))
        b = nn.relu(nn.Conv(3, (3, 3), name="conv_b")(x))
        return nn.Conv(2, (3, 3), name="conv_c")(jnp.concatenate([a, b], axis=-1))


def test_a_concatenation_keeps_each_operand_its_own_group_at_its_offset():
    graph, _ = _graph(Concat(), (2, 5, 5, 1))
    assert [g.size for g in graph.groups] == [2, 3, 2]
    first, second, _ = graph.groups
    assert _members(first) == {
        "params/conv_a/kernel:3": (_one_each(2), {P}),
        "params/conv_a/bias:0": (_one_each(2), {P}),
        "params/conv_c/kernel:2": (((0,), (1,)), {C}),
    }
    assert _members(second) == {
        "params/conv_b/kernel:3": (_one_each(3), {P}),
        "params/conv_b/bias:0": (_one_each(3), {P}),
        "params/conv_c/kernel:2": (((2,), (3,), (4,)), {C}),
    }
    assert first.slice(("params", "conv_c", "kernel"), 2).text() == "params/conv_c/kernel:2[0:2]"
    assert second.slice(("params", "conv_c", "kernel"), 2).text() == "params/conv_c/kernel:2[2:5]"


class Depthwise(nn.Module):
    groups: int = 4  # of the middle convolution; 4 = depthwise

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
        x = nn.relu(nn.Conv(4, (3, 3), feature_group_count=self.groups, name="middle")(x))
        return nn.Conv(3, (1, 1), name="point")(x)


def test_a_depthwise_convolution_carries_its_inputs_channels_through():
    graph, _ = _graph(Depthwise(), (2, 5, 5, 1))
    assert [g.size for g in graph.groups] == [4, 3]
    assert _members(graph.groups[0]) == {
        "params/conv/kernel:3": (_one_each(4), {P}),
        "params/conv/bias:0": (_one_each(4), {P}),
        "params/middle/kernel:3": (_one_each(4), {P}),
        "params/middle/bias:0": (_one_each(4), {P}),
        "params/point/kernel:2": (_one_each(4), {C}),
    }
    assert graph.groups[0].removable and not graph.groups[1].removable


def test_a_grouped_convolution_ties_index_j_of_every_group():
    """Two groups of two: kernel input j reads channel j of each group, and an output
    removed from one group only would leave no grouped convolution."""
    graph, _ = _graph(Depthwise(groups=2), (2, 5, 5, 1))
    assert [g.size for g in graph.groups] == [2, 2, 3]
    pairs = ((0, 2), (1, 3))
    assert _members(graph.groups[0]) == {
        "params/conv/kernel:3": (pairs, {P}),
        "params/conv/bias:0": (pairs, {P}),
        "params/middle/kernel:2": (_one_each(2), {C}),
    }
    assert _members(graph.groups[1]) == {
        "params/middle/kernel:3": (pairs, {P}),
        "params/middle/bias:0": (pairs, {P}),
        "params/point/kernel:2": (pairs, {C}),
    }


class Heads(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(6, name="dense_0")(x).reshape(x.shape[0], 2, 3)  # 2 heads of 3
        return nn.Dense(2, name="dense_1")(nn.relu(x).sum(axis=1))


def test_a_split_channel_axis_prunes_every_head_alike():
    graph, _ = _graph(Heads(), (2, 4))
    assert _members(graph.groups[0]) == {
        "params/dense_0/kernel:1": (((0, 3), (1, 4), (2, 5)), {P}),
        "params/dense_0/bias:0": (((0, 3), (1, 4), (2, 5)), {P}),
        "params/dense_1/kernel:0": (_one_each(3), {C}),
    }
    assert graph.groups[0].removable


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8, name="embed")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6, name="mha")(x)
        return nn.Dense(3, name="head")(x.mean(axis=1))


def test_attention_has_a_residual_group_a_head_group_and_two_head_dim_groups():
    graph, _ = _graph(Attention(), (2, 5, 4))
    assert [g.size for g in graph.groups] == [8, 2, 3, 3, 3]
    stream, heads, qk, v, _ = graph.groups

    def names(group):
        return sorted(s.text() for s in group.slices)

    assert names(stream) == sorted(
        [
            "params/embed/bias:0",
            "params/embed/kernel:1",
            "params/head/kernel:0",
            *(f"params/mha/{n}/kernel:0" for n in ("key", "query", "value")),
            "params/mha/out/bias:0",
            "params/mha/out/kernel:2",
        ]
    )
    assert names(heads) == sorted(
        [
            f"params/mha/{n}/{leaf}:{axis}"
            for n in ("query", "key", "value")
            for leaf, axis in (("kernel", 1), ("bias", 0))
        ]
        + ["params/mha/out/kernel:0"]
    )
    assert names(qk) == sorted(
        f"params/mha/{n}/{leaf}:{axis}"
        for n in ("query", "key")
        for leaf, axis in (("kernel", 2), ("bias", 1))
    )
    assert names(v) == [
        "params/mha/out/kernel:1",
        "params/mha/value/bias:1",
        "params/mha/value/kernel:2",
    ]
    assert all(g.removable for g in (stream, heads, qk, v))


class Norms(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv_0")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="bn")(x))
        x = nn.LayerNorm(name="ln")(x)
        return nn.Conv(2, (3, 3), name="conv_1")(x)


def test_batch_norm_and_layer_norm_join_the_group_of_the_layer_they_normalise():
    graph, _ = _graph(Norms(), (2, 5, 5, 1))
    group = graph.groups[0]
    assert group.size == 4 and group.removable
    assert _members(group) == {
        "params/conv_0/kernel:3": (_one_each(4), {P}),
        "params/conv_0/bias:0": (_one_each(4), {P}),
        "params/bn/scale:0": (_one_each(4), {P}),
        "params/bn/bias:0": (_one_each(4), {P}),
        "batch_stats/bn/mean:0": (_one_each(4), {S}),
        "batch_stats/bn/var:0": (_one_each(4), {S}),
        "params/ln/scale:0": (_one_each(4), {P}),
        "params/ln/bias:0": (_one_each(4), {P}),
        "params/conv_1/kernel:2": (_one_each(4), {C}),
    }
    # The layer norm's statistics are taken over the channels: noted, not refused.
    assert group.mixed and all("ln" in text for text in group.mixed)


class Cumulative(nn.Module):
    axis: int = -1

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (3, 3), name="conv_0")(x)
        return nn.Conv(2, (3, 3), name="conv_1")(jnp.cumsum(x, axis=self.axis))


def test_an_unknown_primitive_on_a_channel_axis_keeps_the_group_and_says_where():
    graph, _ = _graph(Cumulative(), (2, 5, 5, 1))
    group = graph.group_of(("params", "conv_0", "kernel"), 3)
    assert not group.removable
    [(primitive, where)] = graph.notes
    assert primitive == "cumsum"
    assert "params/conv_0/kernel axis 3" in where and "test_graph.py" in where
    assert any("'cumsum'" in reason for reason in group.reasons)
    text = graph_lib.note_text(primitive, where)
    assert text.startswith("'cumsum' on the channel axis of params/conv_0/kernel axis 3")
    assert text.endswith("; those channels are kept")
    # Along a spatial axis the channels pass through untouched.
    graph, _ = _graph(Cumulative(axis=1), (2, 5, 5, 1))
    assert graph.notes == () and graph.groups[0].removable


def test_the_note_names_the_users_line_after_an_onnx_export():
    # An export loads jax2onnx's plugins, which replace `jnp.cumsum` with a wrapper of
    # their own: the note still names the model's line, not the wrapper's.
    import jax2onnx

    jax2onnx.to_onnx(lambda x: jnp.cumsum(x, axis=0), [(2,)])
    graph, _ = _graph(Cumulative(), (2, 5, 5, 1))
    [(_, where)] = graph.notes
    assert "test_graph.py:" in where and "cumsum.py" not in where


class InputResidual(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x + nn.Conv(2, (3, 3), name="conv_0")(x)
        return nn.Conv(3, (3, 3), name="conv_1")(x)


def test_a_group_added_to_the_data_is_kept():
    graph, _ = _graph(InputResidual(), (2, 5, 5, 2))
    group = graph.group_of(("params", "conv_0", "kernel"), 3)
    assert not group.removable
    assert any("meets the data" in reason for reason in group.reasons)


def test_masks_disable_exactly_the_producer_slices_of_the_residual_group():
    model = Residual()
    graph, variables = _graph(model, (2, 6, 6, 1), seed=3)
    shared = graph.group_of(("params", "stem", "kernel"), 3)
    masks = graph.full_masks()
    masks[graph.groups.index(shared)] = np.array([True, False, True, True])
    multipliers = jax.jit(graph.masks_to_variables)(masks)
    params = multipliers["params"]
    for layer in ("stem", "block_1"):
        kernel, bias = np.asarray(params[layer]["kernel"]), np.asarray(params[layer]["bias"])
        assert np.all(kernel[..., 1] == 0) and np.all(np.delete(kernel, 1, axis=-1) == 1)
        assert bias.tolist() == [1, 0, 1, 1]
    for layer in ("block_0", "dense_0", "dense_1"):
        for leaf in params[layer].values():
            assert np.all(np.asarray(leaf) == 1), layer
    masked = jax.tree.map(lambda v, m: v * m, variables, multipliers)
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 1))
    _, state = model.apply(masked, x, mutable=["intermediates"])
    [after] = state["intermediates"]["after_add"]
    assert np.all(np.asarray(after[..., 1]) == 0)
    assert np.all(np.abs(np.asarray(after[..., [0, 2, 3]])).sum(axis=(0, 1, 2)) > 0)


def test_a_kept_group_takes_no_mask():
    graph, _ = _graph(Chain(), (1, 5, 5, 1))
    masks = graph.full_masks()
    assert masks[2] is None
    masks[2] = np.array([True, False])
    with pytest.raises(ValueError, match="not removable"):
        graph.masks_to_variables(masks)


def test_a_model_from_code_whose_file_name_has_spaces_is_traced():
    # Code run by `exec` under a name like 'README.md (Your own model)': its equations'
    # places are read from 'path:line' summaries whose path holds spaces.
    namespace = {}
    source = (
        "import flax.linen as nn\n"
        "class Net(nn.Module):\n"
        "    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(2)(nn.relu(nn.Dense(3)(x)))\n"
    )
    exec(compile(source, "README.md (a section)", "exec"), namespace)
    net = namespace["Net"]()
    x = jnp.ones((2, 4))
    variables = net.init(jax.random.key(0), x)
    g = graph_lib.channel_groups(lambda v, x: net.apply(v, x), variables, x)
    assert [grp.size for grp in g.groups if grp.removable] == [3]
