"""The zoo's plain Flax networks and the channel graph read from them, written out by
hand: which channels a residual stage, a projection shortcut, a U-Net's skip and
concatenation and an inverted residual block couple, and proof that the graph's masks
disable exactly those channels wherever they are read."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxshrink.core import graph as graph_lib
from jaxshrink.core import shrink
from jaxshrink.core.models import zoo

P, C, S = graph_lib.PRODUCER, graph_lib.CONSUMER, graph_lib.STATE

# Tiny versions of each network, with distinct widths so that a group's size already
# says which layer made it. 8 x 8 inputs, batch 2.
MODELS = {
    "resnet8": (zoo.CifarResNet(depth=8, widths=(4, 6, 8), num_classes=3), (2, 8, 8, 3)),
    "resnet20": (zoo.CifarResNet(depth=20, widths=(2, 3, 4), num_classes=3), (2, 8, 8, 3)),
    "unet": (zoo.UNet(widths=(8, 16), out_channels=1), (2, 8, 8, 1)),
    "unet3": (zoo.UNet(widths=(3, 4, 5), out_channels=2), (2, 8, 8, 1)),
    "mobilenet": (
        zoo.MobileNetLike(num_classes=3, stem_width=4, blocks=((1, 3, 1), (2, 4, 2), (2, 4, 1))),
        (2, 8, 8, 3),
    ),
    "mobilenet_default": (zoo.MobileNetLike(), (2, 8, 8, 3)),
}


@functools.cache
def _built(name: str):
    """(model, variables, x, graph) of a tiny network, traced in inference mode."""
    model, shape = MODELS[name]
    x = jax.random.normal(jax.random.key(1), shape)
    variables = _random_variables(jax.eval_shape(model.init, jax.random.key(0), x))
    graph = graph_lib.channel_groups(lambda v, x: model.apply(v, x), variables, x)
    return model, variables, x, graph


def _random_variables(shapes, seed: int = 2):
    """Variables of these shapes drawn with numpy (no per-op compilation, which an
    eager `init` spends seconds on). Kernels are He-scaled; biases, batch norm shifts
    and running statistics are off their initial values, so a shift left unmasked
    would show as a non-zero channel, and positive, so that no ReLU channel is zero by
    accident when every channel is kept."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        shape, name = leaf.shape, path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            return rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
        base = {"bias": 0.1, "scale": 1.0, "mean": 0.0, "var": 1.0}[name]
        noise = rng.normal(0, 0.1, shape)
        return (base + (noise if name in ("scale", "mean") else np.abs(noise))).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _members(group) -> dict:
    """{'collection/layer/leaf:axis': (roles, indices)} of a group."""
    return {f"{'/'.join(s.path)}:{s.axis}": (set(s.roles), s.indices) for s in group.slices}


def _expected(size: int, members: dict) -> dict:
    """`members` in `_members`' form: a role alone owns one entry per channel, in order."""
    whole = tuple((k,) for k in range(size))
    return {
        name: ({spec}, whole) if isinstance(spec, str) else ({spec[0]}, spec[1])
        for name, spec in members.items()
    }


def _check_groups(graph, expected: list) -> None:
    """`graph` has exactly the groups `expected` lists as (size, removable, members)."""
    assert len(graph.groups) == len(expected)
    assert sorted(g.size for g in graph.groups) == sorted(size for size, _, _ in expected)
    # Keyed by the first producer named (a short, readable diff when one differs).
    want = {}
    for size, removable, members in expected:
        first = next(name for name, role in members.items() if role == P)
        want[first] = (size, removable, _expected(size, members))
    have = {}
    for g in graph.groups:
        members = _members(g)
        first = next((name for name in want if name in members), g.producers[0].text())
        have[first] = (g.size, g.removable, members)
    assert have == want
    assert graph.notes == ()
    assert all(g.mixed == () for g in graph.groups)  # pooling mixes pixels, not channels


def _join(*parts: dict) -> dict:
    return {name: role for part in parts for name, role in part.items()}


def _conv(*names: str) -> dict:
    """Bias-free convolutions' output axes: they make the channels."""
    return {f"params/{name}/kernel:3": P for name in names}


def _reads(*names: str) -> dict:
    """Convolutions' input axes: they read the channels."""
    return {f"params/{name}/kernel:2": C for name in names}


def _bn(*names: str) -> dict:
    """Batch norms in inference mode: scale and shift make the channels, the running
    statistics only take part."""
    return _join(
        *(
            {
                f"params/{name}/scale:0": P,
                f"params/{name}/bias:0": P,
                f"batch_stats/{name}/mean:0": S,
                f"batch_stats/{name}/var:0": S,
            }
            for name in names
        )
    )


def _biased(*names: str) -> dict:
    """Convolutions with bias: kernel output axis and bias make the channels."""
    return _join(*({f"params/{n}/kernel:3": P, f"params/{n}/bias:0": P} for n in names))


def _reads_at(name: str, start: int, size: int) -> dict:
    """A convolution's input axis at entries start .. start + size - 1 (one operand of
    a concatenation)."""
    return {f"params/{name}/kernel:2": (C, tuple((start + k,) for k in range(size)))}


HEAD = {"params/head/kernel:1": P, "params/head/bias:0": P}
READ_BY_HEAD = {"params/head/kernel:0": C}

# ---------------------------------------------------------------------- ResNet


def test_resnet8_has_a_stream_group_per_stage_and_an_inner_group_per_block():
    """depth 8: one block per stage. Stage 1's block keeps the shape (identity
    shortcut), so its second conv adds into the stem's channels; stages 2 and 3 start
    with a projection, which makes their stream a new group that the projection and
    the block's second conv produce together."""
    *_, graph = _built("resnet8")
    s1, s2, s3 = "stage1_block1", "stage2_block1", "stage3_block1"
    stream1 = _join(
        _conv("stem", f"{s1}/conv2"),
        _bn("stem_bn", f"{s1}/bn2"),
        _reads(f"{s1}/conv1", f"{s2}/conv1", f"{s2}/proj"),
    )
    stream2 = _join(
        _conv(f"{s2}/conv2", f"{s2}/proj"),
        _bn(f"{s2}/bn2", f"{s2}/proj_bn"),
        _reads(f"{s3}/conv1", f"{s3}/proj"),
    )
    stream3 = _join(
        _conv(f"{s3}/conv2", f"{s3}/proj"), _bn(f"{s3}/bn2", f"{s3}/proj_bn"), READ_BY_HEAD
    )

    def inner(block):
        return _join(_conv(f"{block}/conv1"), _bn(f"{block}/bn1"), _reads(f"{block}/conv2"))

    _check_groups(
        graph,
        [
            (4, True, stream1),
            (4, True, inner(s1)),
            (6, True, inner(s2)),
            (6, True, stream2),
            (8, True, inner(s3)),
            (8, True, stream3),
            (3, False, HEAD),
        ],
    )
    assert [g.size for g in graph.removable] == [4, 4, 6, 6, 8, 8]
    logits = graph.group_of(("params", "head", "kernel"), 1)
    assert logits.reasons == ("reaches the function's output",)
    assert graph.group_of(("params", s2, "proj", "kernel"), 3) is graph.group_of(
        ("params", s2, "conv2", "kernel"), 3
    )


def _resnet_groups(blocks: int, widths) -> list:
    """The groups of a CIFAR ResNet from its architecture: per stage one stream group
    (produced by the stem or the projection and by every block's second conv, read by
    every block's first conv but a projecting one's, then by the next stage's first
    block and projection, or the head), per block one inner group, and the logits."""
    groups = []
    for s, width in enumerate(widths):
        stream = _join(_conv("stem"), _bn("stem_bn")) if s == 0 else {}
        for b in range(blocks):
            name = f"stage{s + 1}_block{b + 1}"
            inner = _join(_conv(f"{name}/conv1"), _bn(f"{name}/bn1"), _reads(f"{name}/conv2"))
            groups.append((width, True, inner))
            stream |= _join(_conv(f"{name}/conv2"), _bn(f"{name}/bn2"))
            if s > 0 and b == 0:  # its conv1 reads the previous stage's stream
                stream |= _join(_conv(f"{name}/proj"), _bn(f"{name}/proj_bn"))
            else:
                stream |= _reads(f"{name}/conv1")
        if s + 1 < len(widths):
            stream |= _reads(f"stage{s + 2}_block1/conv1", f"stage{s + 2}_block1/proj")
        else:
            stream |= READ_BY_HEAD
        groups.append((width, True, stream))
    return groups + [(3, False, HEAD)]


def test_resnet20_identity_blocks_join_their_stages_stream():
    *_, graph = _built("resnet20")
    _check_groups(graph, _resnet_groups(3, (2, 3, 4)))
    assert len(graph.groups) == 13 and len(graph.removable) == 12
    stream2 = graph.group_of(("params", "stage2_block3", "bn2", "scale"), 0)
    assert len(stream2.producers) == 3 * 3 + 3  # three conv2 + bn2, the projection + its bn
    # Blocks 2 and 3 read it, and stage 3's first block (conv1 and projection); block 1's
    # conv1 reads stage 1's stream.
    assert len(stream2.consumers) == 2 + 2


def test_resnet_sizes_and_depths():
    def params(model, shape=(1, 32, 32, 3)):
        shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape))
        return sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))

    # The paper's 0.27 M and 0.85 M, plus the projections' 2,752 (option B).
    assert params(zoo.CifarResNet()) == 272_474
    assert params(zoo.CifarResNet(depth=56)) == 855_770
    assert params(zoo.UNet(), (1, 16, 16, 1)) == 6_425
    assert params(zoo.MobileNetLike()) == 40_074
    for depth in (7, 10, 2, 0):
        with pytest.raises(ValueError, match=f"depth {depth}: a CIFAR ResNet has 6n \\+ 2"):
            zoo.blocks_per_stage(depth)
    with pytest.raises(ValueError, match="depth 21"):
        jax.eval_shape(zoo.CifarResNet(depth=21).init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    model, variables, x, _ = _built("resnet8")
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 3)
    train = functools.partial(model.apply, train=True, mutable=["batch_stats"])
    logits, state = jax.eval_shape(train, variables, x)
    assert logits.shape == (2, 3) and set(state) == {"batch_stats"}


# ---------------------------------------------------------------------- U-Net


def test_unet_concatenation_keeps_skip_and_upsampling_groups_at_their_offsets():
    """The skip (down0's second conv) is read twice: by the bottleneck after pooling
    and by dec0's first conv at inputs 0..7; the upsampling's channels are that conv's
    inputs 8..15, a group of their own."""
    *_, graph = _built("unet")
    _check_groups(
        graph,
        [
            (8, True, _join(_biased("down0/conv1"), _reads("down0/conv2"))),
            (
                8,
                True,
                _join(
                    _biased("down0/conv2"),
                    _reads("bottleneck/conv1"),
                    _reads_at("dec0/conv1", 0, 8),
                ),
            ),
            (16, True, _join(_biased("bottleneck/conv1"), _reads("bottleneck/conv2"))),
            (16, True, _join(_biased("bottleneck/conv2"), _reads("up0"))),
            (8, True, _join(_biased("up0"), _reads_at("dec0/conv1", 8, 8))),
            (8, True, _join(_biased("dec0/conv1"), _reads("dec0/conv2"))),
            (8, True, _join(_biased("dec0/conv2"), _reads("out"))),
            (1, False, _biased("out")),
        ],
    )
    skip = graph.group_of(("params", "down0", "conv2", "kernel"), 3)
    assert skip.slice(("params", "dec0", "conv1", "kernel"), 2).text() == (
        "params/dec0/conv1/kernel:2[0:8]"
    )
    up = graph.group_of(("params", "up0", "kernel"), 3)
    assert up.slice(("params", "dec0", "conv1", "kernel"), 2).text() == (
        "params/dec0/conv1/kernel:2[8:16]"
    )
    model, variables, x, _ = _built("unet")
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="divisible by 2"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 7, 8, 1)))


def test_unet_with_two_levels_has_a_skip_group_per_level():
    """widths (3, 4, 5): the skips of 3 and 4 channels go in front of the
    upsamplings to 3 and 4 channels in dec0 and dec1."""
    *_, graph = _built("unet3")

    def group(layer):
        return _members(graph.group_of(("params", *layer.split("/"), "kernel"), 3))

    assert group("down0/conv2") == _expected(
        3, _join(_biased("down0/conv2"), _reads("down1/conv1"), _reads_at("dec0/conv1", 0, 3))
    )
    assert group("down1/conv2") == _expected(
        4, _join(_biased("down1/conv2"), _reads("bottleneck/conv1"), _reads_at("dec1/conv1", 0, 4))
    )
    assert group("up1") == _expected(4, _join(_biased("up1"), _reads_at("dec1/conv1", 4, 4)))
    assert group("up0") == _expected(3, _join(_biased("up0"), _reads_at("dec0/conv1", 3, 3)))
    # Two per ConvBlock (down0, down1, bottleneck, dec1, dec0), two upsamplings, the output.
    assert len(graph.groups) == 2 * 5 + 2 + 1 and len(graph.removable) == 12
    assert graph.notes == ()


# ---------------------------------------------------------------------- MobileNetV2


def test_mobilenet_depthwise_joins_the_expansion_and_a_residual_joins_the_projections():
    """block1 does not expand, so its depthwise conv filters the stem's channels
    (their group); block2 expands 3 -> 6, strides and projects to 4; block3 expands
    4 -> 8 and adds its projection to block2's, one group read by block3 and the head."""
    *_, graph = _built("mobilenet")

    def expansion(block):
        return _join(
            _conv(f"{block}/expand", f"{block}/depthwise"),
            _bn(f"{block}/expand_bn", f"{block}/depthwise_bn"),
            _reads(f"{block}/project"),
        )

    stem = _join(
        _conv("stem", "block1/depthwise"),
        _bn("stem_bn", "block1/depthwise_bn"),
        _reads("block1/project"),
    )
    block1 = _join(_conv("block1/project"), _bn("block1/project_bn"), _reads("block2/expand"))
    stream = _join(
        _conv("block2/project", "block3/project"),
        _bn("block2/project_bn", "block3/project_bn"),
        _reads("block3/expand"),
        READ_BY_HEAD,
    )
    _check_groups(
        graph,
        [
            (4, True, stem),
            (3, True, block1),
            (6, True, expansion("block2")),
            (4, True, stream),
            (8, True, expansion("block3")),
            (3, False, HEAD),
        ],
    )
    # The depthwise kernel's size-1 input axis serves every channel: in no group.
    for group in graph.groups:
        assert ("params", "block2", "depthwise", "kernel") not in [
            s.path for s in group.slices if s.axis == 2
        ]


def test_mobilenet_default_stem_group_spans_a_whole_non_expanding_residual_block():
    """The default first block keeps 16 channels at stride 1 without expanding: its
    depthwise conv and both sides of its projection belong to the stem's channels."""
    model, variables, x, graph = _built("mobilenet_default")
    assert jax.eval_shape(model.apply, variables, x).shape == (2, 10)
    stem = graph.group_of(("params", "stem", "kernel"), 3)
    assert _members(stem) == _expected(
        16,
        _join(
            _conv("stem", "block1/depthwise", "block1/project"),
            _bn("stem_bn", "block1/depthwise_bn", "block1/project_bn"),
            _reads("block1/project", "block2/expand"),
        ),
    )
    # The stem's (with block1), the expansions of blocks 2..5 (96, 144, 144, 192), the
    # two streams (24, 32) and the logits.
    assert [g.size for g in graph.groups] == [16, 96, 24, 144, 144, 32, 192, 10]
    assert len(graph.removable) == 7 and graph.notes == ()


# ---------------------------------------------------------------------- the masks


LAYERS = (nn.Conv, nn.ConvTranspose, nn.Dense)


def _layer_inputs(model, variables, x) -> dict:
    """{module path: input} of every convolution and dense layer of one inference call."""
    seen = {}

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, LAYERS):
            seen[tuple(context.module.path)] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, x)
    return seen


@functools.cache
def _masked_inputs(name: str):
    """A jitted (masks) -> layer inputs of the network whose variables are multiplied by
    the graph's multipliers for those masks."""
    model, variables, x, graph = _built(name)

    @jax.jit
    def run(masks):
        multipliers = graph.masks_to_variables(masks)
        masked = jax.tree.map(lambda v, m: v * m, variables, multipliers)
        return _layer_inputs(model, masked, x)

    return run


def _check_consumers(graph, inputs: dict, masks) -> int:
    """Asserts every consumer entry of every disabled channel reads exactly zero;
    returns how many channels it checked."""
    checked = 0
    for group, mask in zip(graph.groups, masks):
        if mask is None:
            continue
        for s in group.consumers:
            assert s.path[0] == "params" and s.path[-1] == "kernel"
            read = np.asarray(inputs[s.path[1:-1]])
            read = read.reshape(-1, read.shape[-1])
            assert read.shape[1] == s.length
            for k in np.flatnonzero(~np.asarray(mask)):
                assert np.all(read[:, list(s.indices[k])] == 0), (s.text(), k)
                checked += 1
    return checked


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "unet3", "mobilenet"])
def test_all_channels_kept_the_consumers_read_live_inputs(name):
    """The instrument sees real data: with no channel disabled, most consumer channels
    are non-zero somewhere (so the zeros below come from the masks). Not all: a ReLU
    after a random convolution leaves some channels dead on a few pixels."""
    *_, graph = _built(name)
    inputs = _masked_inputs(name)(graph.full_masks())
    live = []
    for group in graph.removable:
        for s in group.consumers:
            read = np.asarray(inputs[s.path[1:-1]]).reshape(-1, s.length)
            alive = np.any(read != 0, axis=0)
            assert alive.any(), s.text()
            live += [alive[list(entries)].all() for entries in s.indices]
    assert np.mean(live) >= 0.75


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "unet3", "mobilenet"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_disabled_channels_read_exactly_zero_at_every_consumer(name, data):
    """Any masks: zeroing a group's producers (kernel out-slices, biases, batch norm
    scales and shifts) makes its channels exactly zero after ReLU, ReLU6, a residual
    add, pooling, a transposed convolution and a concatenation, wherever a
    convolution or the head reads them. Variables are off their initial values, so a
    producer the graph missed would leave a non-zero channel."""
    *_, graph = _built(name)
    masks = [
        None
        if not g.removable
        else np.array(data.draw(st.lists(st.booleans(), min_size=g.size, max_size=g.size)))
        for g in graph.groups
    ]
    inputs = _masked_inputs(name)(masks)
    checked = _check_consumers(graph, inputs, masks)
    pairs = [(g, m) for g, m in zip(graph.groups, masks) if m is not None]
    assert checked == sum(int((~m).sum()) * len(g.consumers) for g, m in pairs)


@pytest.mark.parametrize("name", ["resnet8", "unet3", "mobilenet"])
def test_the_physically_smaller_network_equals_the_masked_one(name):
    """`shrink.smaller` on each network: random keep masks (at least one channel per
    group) give a program over sliced variables whose output equals the masked
    network's, with as many fewer parameters as the removed slices hold."""
    model, variables, x, graph = _built(name)
    fn = lambda v, x: model.apply(v, x)  # noqa: E731
    rng = np.random.default_rng(7)
    for _ in range(2):
        keep = []
        for g in graph.groups:
            if not g.removable:
                keep.append(None)
                continue
            mask = rng.random(g.size) < 0.6
            mask[rng.integers(g.size)] = True
            keep.append(mask)
        small_fn, small_vars = shrink.smaller(fn, variables, (x,), graph, keep)
        multipliers = graph.masks_to_variables(keep)
        masked = jax.tree.map(lambda v, m: v * m, variables, multipliers)
        want = fn(masked, x)
        np.testing.assert_allclose(jax.jit(small_fn)(small_vars, x), want, rtol=1e-5, atol=1e-5)
        before, after = shrink.count(graph, {"params": variables["params"]}, keep)
        sizes = sum(int(np.size(v)) for v in jax.tree.leaves(small_vars["params"]))
        assert after == sizes < before
