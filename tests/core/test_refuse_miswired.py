"""A model whose dataflow is not the chain its layer list describes is refused when it
is created, in one line naming the layer; every network the package ships passes.

The modules below are a researcher's plain Flax, written the README's way (each
maskable layer's output multiplied by its mask after the ReLU). Sizes that divide are
not a chain: a residual add or a concatenation passes `spec.trace`'s size check, and
then a disabled unit is not zero, so `Model.create` reads the traced dataflow too.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from conftest import load_config, tiny_config, tiny_mnist

from jaxshrink.config import resolve
from jaxshrink.core import errors, models, spec

COUPLED = (
    "a chain of layers cannot describe coupled channels, so the model is refused rather than "
    "shrunk wrongly"
)


class SmallResNet(nn.Module):
    """Stem, a block of two convolutions added to the stem's output, global average
    pooling, two dense layers."""

    widths: dict | None = None

    @nn.compact
    def __call__(self, x, masks, train=False):
        w = {"stem": 8, "conv_0": 8, "conv_1": 8, "hidden": 16, **(self.widths or {})}
        stem = nn.relu(nn.Conv(w["stem"], (3, 3), name="stem")(x)) * masks["stem"]
        h = nn.relu(nn.Conv(w["conv_0"], (3, 3), name="conv_0")(stem)) * masks["conv_0"]
        h = nn.relu(nn.Conv(w["conv_1"], (3, 3), name="conv_1")(h)) * masks["conv_1"]
        x = (stem + h).mean(axis=(1, 2))
        x = nn.relu(nn.Dense(w["hidden"], name="hidden")(x)) * masks["hidden"]
        return nn.Dense(10, name="out")(x) * masks["out"]


RESNET_LAYERS = ("stem", "conv_0", "conv_1", "hidden", "out")


def test_the_residual_network_is_refused_at_create_time_naming_the_layer():
    built = []

    def build(widths):
        built.append(widths)
        return SmallResNet(widths)

    with pytest.raises(errors.ConfigError) as refused:
        models.Model.create(build, (8, 8, 1), RESNET_LAYERS)
    assert str(refused.value) == (
        "model: layer 'conv_1' is not a chain link: its output channels are tied to "
        f"'stem' (a residual add or concatenation); {COUPLED}"
    )
    assert "\n" not in str(refused.value)
    assert built == [None]  # refused from the one trace: nothing built at other widths


def test_the_sizes_alone_describe_the_residual_network_as_a_chain(monkeypatch):
    # What was accepted before: the sizes divide, so the layers look like a chain.
    monkeypatch.setattr(spec, "check_chain", lambda *args, **kwargs: None)
    model = models.Model.create(SmallResNet, (8, 8, 1), RESNET_LAYERS)
    assert [len(layer.feeds) for layer in model.spec.layers] == [1, 1, 1, 1, 0]


class Concat(nn.Module):
    """A branch whose output is concatenated with its input before the head."""

    @nn.compact
    def __call__(self, x, masks, train=False):
        stem = nn.relu(nn.Conv(4, (3, 3), name="stem")(x)) * masks["stem"]
        branch = nn.relu(nn.Conv(4, (3, 3), name="branch")(stem)) * masks["branch"]
        x = jnp.concatenate([stem, branch], axis=-1)
        x = nn.relu(nn.Conv(6, (3, 3), name="head")(x)) * masks["head"]
        return nn.Dense(3, name="out")(x.mean(axis=(1, 2))) * masks["out"]


def test_a_concatenation_is_refused():
    with pytest.raises(errors.ConfigError, match="^model: layer 'stem' is not a chain link") as e:
        models.Model.create(lambda _: Concat(), (8, 8, 1), ("stem", "branch", "head", "out"))
    assert "read by 'head', which is not the next layer 'branch'" in str(e.value)


def _dense_net(body):
    """A module of dense layers on 4 features whose call is `body(x, masks)`."""

    class Net(nn.Module):
        widths: dict | None = None

        @nn.compact
        def __call__(self, x, masks, train=False):
            return body(x, masks)

    return Net


def _dense(units, name, x, masks):
    return nn.relu(nn.Dense(units, name=name)(x)) * masks[name]


def _gated(x, m):
    """'b' passes 'a''s output on when none of its units is alive (a bypass)."""
    h = _dense(4, "a", x, m)
    return nn.Dense(2, name="out")(jnp.where(jnp.any(m["b"]), _dense(4, "b", h, m), h)) * m["out"]


def _unmasked(x, m):
    h = _dense(4, "a", x, m)
    return nn.Dense(2, name="out")(nn.relu(nn.Dense(4, name="b")(h))) * m["out"]


def _input_residual(x, m):
    return nn.Dense(2, name="out")(x + _dense(4, "a", x, m)) * m["out"]


def _first_gated(x, m):
    return nn.Dense(2, name="out")(jnp.where(jnp.any(m["a"]), _dense(4, "a", x, m), x)) * m["out"]


def _layer_norm(x, m):
    return nn.Dense(2, name="out")(nn.LayerNorm(name="norm")(_dense(4, "a", x, m))) * m["out"]


@pytest.mark.parametrize(
    "body, layers, bypassable, refusal",
    [
        (
            _gated,
            ("a", "b", "out"),
            (),
            "layer 'b' is not a chain link: its output channels are tied to 'a'",
        ),
        (
            _unmasked,
            ("a", "b", "out"),
            (),
            "layer 'b' is not a chain link: masks['b'] does not multiply its output channels",
        ),
        (
            _input_residual,
            ("a", "out"),
            (),
            "layer 'a' is not a chain link: its output channels meet the data",
        ),
        (
            _layer_norm,
            ("a", "out"),
            (),
            "layer 'a' is not a chain link: its output channels are tied to 'norm/scale'",
        ),
        (_gated, ("a", "b", "out"), "auto", None),  # a declared bypass is the spec's own
        (_first_gated, ("a", "out"), ("a",), None),  # passes the network's input on
    ],
)
def test_what_the_chain_does_not_describe_is_refused(body, layers, bypassable, refusal):
    def create():
        return models.Model.create(
            lambda _: _dense_net(body)(), (4,), layers, bypassable=bypassable
        )

    if refusal is None:
        assert create().spec.names == list(layers)
        return
    with pytest.raises(errors.ConfigError, match="^model: " + refusal.replace("[", r"\[")):
        create()


class ChannelMajor(nn.Module):
    """Flattens (C, H, W), not NHWC: dense input j reads channel j // 16, not j % 3."""

    @nn.compact
    def __call__(self, x, masks, train=False):
        x = nn.relu(nn.Conv(3, (3, 3), name="conv")(x)) * masks["conv"]
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        return nn.Dense(2, name="out")(x) * masks["out"]


def test_a_flatten_the_spec_does_not_describe_is_refused():
    with pytest.raises(errors.ConfigError, match="'out' reads its output channels at other"):
        models.Model.create(lambda _: ChannelMajor(), (4, 4, 1), ("conv", "out"))


# ----------------------------------------------------------- what the package ships


def _config(name, arg=None, **model):
    def make():
        c = {"sobel": tiny_config, "canny": tiny_config}.get(name)
        c = c(name) if c else (tiny_mnist() if name == "mnist" else load_config(name, arg))
        c.model.update(model)
        return c

    return make


SHIPPED = {
    "fcn": _config("sobel"),
    "fcn-bypass": _config("canny", num_layers=5, bypass=True),
    "mnist-quick": _config("mnist"),
    "mnist-t003": _config("mnist", "t003"),
    "cifar10-quick": _config("cifar10", "quick"),
    "cifar10-t003-bypass": _config("cifar10", "t003", bypass=True),
    "autoencoder": _config("autoencoder", "quick"),
    "summation": _config("summation", "quick"),
    "summation-bypass": _config("summation", "quick", hidden=(8, 8, 8), bypass=True),
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_every_shipped_network_is_a_chain(name):
    c = SHIPPED[name]()
    model = models.get_model(c.model, resolve._example_shape(c))
    assert tuple(model.spec.names) == model.layers
    if c.model.bypass:
        assert model.spec.bypassable  # the gate's coupling is allowed, not absent


@pytest.mark.parametrize("conv", ["direct", "taps", "packed", "pallas"])
def test_the_custom_convolutions_are_read_as_plain_ones(conv):
    layers = ("conv:3:3:bn", "conv:3:3", "maxpool:2", "dense:4", "dense:2")
    model = models.sequential_model(layers, (8, 8, 1), conv=conv, bypass=True)
    assert [layer.bypass for layer in model.spec.layers] == [False, True, False, False]


def test_the_compact_and_factorized_forms_pass():
    layers = ("conv:3:3", "conv:3:3", "conv:3:3", "conv:1:3")
    model = models.sequential_model(layers, (8, 8, 1), bypass=True)
    small = model.at_widths({"conv_0": 2, "conv_1": 0, "conv_2": 3, "conv_3": 1})
    assert small.spec.names == ["conv_0", "conv_2", "conv_3"]
    # The factorized module is built, never traced by the check: conv_0 of rank 1 is a
    # 3x1 then a 1x3 convolution, conv_1 stays left out.
    factorized = small.factorized(None, {"conv_0": 1})
    x = jnp.zeros((1, 8, 8, 1))
    shapes = jax.eval_shape(lambda: factorized.init(jax.random.key(0), x, spec.full(small.spec)))
    kernels = {k: v["kernel"].shape for k, v in shapes["params"].items()}
    assert kernels == {
        "conv_0_v": (3, 1, 1, 1),
        "conv_0": (1, 3, 1, 2),
        "conv_2": (3, 3, 2, 3),
        "conv_3": (3, 3, 3, 1),
    }
    assert spec.count_flops(small.spec) < spec.count_flops(model.spec)


def test_a_one_unit_layer_before_a_flatten_passes():
    # The flatten drops its size-1 channel axis and the graph loses the channel there;
    # every dense input reads unit 0, as the chain says.
    model = models.sequential_model(("conv:3:3", "conv:2:3:bn", "dense:3"), (6, 5, 2))
    small = model.at_widths({"conv_0": 2, "conv_1": 1, "dense_0": 3})
    assert small.spec.layer("dense_0").in_features == 6 * 5
