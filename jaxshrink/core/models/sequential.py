"""`Sequential`: a stack of masked layers described by short strings.

Every network of the three theses is a chain of convolutions, pooling and dense
layers, so one module covers them all (the FCN, the summation MLP, the MNIST
classifiers). A network is a tuple of layer strings:

* ``conv:F:K`` a K x K convolution with F filters, stride 1, 'SAME' padding; add
  ``:valid`` for 'VALID' padding and ``:sN`` for stride N;
* ``convT:F:K`` a K x K transposed convolution with F filters ('SAME'; with ``:sN``
  it multiplies height and width by N), Flax's kernel layout (K, K, in, F);
* ``dense:N`` a dense layer with N units (inputs of rank > 2 are flattened first, in
  NHWC order);
* ``maxpool:W`` max pooling over W x W windows with stride W ('VALID'); ``:sN`` sets
  the stride, ``:same`` 'SAME' padding (thesis 003's CIFAR-10 pools are
  ``maxpool:3:s2:same``);
* ``dropout:R`` dropout with rate R (active only when called with ``train=True``).

Convolutions, transposed convolutions and dense layers are the maskable layers, named
``conv_i``, ``convT_i`` and ``dense_i`` (i counts per kind). The option ``:bn`` adds a
batch norm after the layer (its sub-module ``<name>_bn``; batch statistics when
training, the running ones otherwise; TensorFlow's defaults, momentum 0.99 and epsilon
1e-3, as the theses used). Each layer (and its batch norm) is followed by a ReLU (the
last one only when `final_activation`), then multiplied by its mask, so a disabled
unit's output is exactly zero whatever its weights: the network computes the same
function as the one with the unit physically removed, and the unit's weights get
exactly zero gradient.

With ``bypass=True`` every maskable layer but the last whose output has the shape of
its input (a 'SAME' convolution from F to F channels, a dense layer from N to N) is
*bypassable*: when none of its units is alive its output is its input, so a layer is
removed from the depth by its masks alone (`spec` module docstring). The compact
network of `export` leaves such a layer out (width 0 in `widths`).

`ranks` factorizes layers (`jaxshrink.deploy.lowrank`): a ``conv:F:K`` layer ``name`` with
``ranks[name] = r`` becomes a K x 1 convolution to r channels without bias (sub-module
``<name>_v``, stride (s, 1)) followed by a 1 x K one to F channels (``name``, stride
(1, s), the bias); a ``dense:N`` layer becomes a bias-free dense layer to r units
(``<name>_in``) followed by the N-unit one (``name``). Both use the layer's padding,
initialisers and precision; its batch norm, ReLU and mask stay on ``name``. Without
ranks the module is the unfactorized one, parameter for parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxshrink.core import convs

MASKABLE = ("conv", "convT", "dense")
OTHERS = ("maxpool", "dropout")
_OPTIONS = {
    "conv": ("valid", "sN", "bn"),
    "convT": ("sN", "bn"),
    "dense": ("bn",),
    "maxpool": ("sN", "same"),
    "dropout": (),
}
BN_MOMENTUM = 0.99  # TensorFlow's batch-norm defaults
BN_EPSILON = 1e-3


def _stride(options: Sequence[str], default: int) -> int:
    """N of an ``sN`` option (``same`` is not one), else `default`."""
    return next((int(o[1:]) for o in options if o.startswith("s") and o[1:].isdigit()), default)


def parse(token: str) -> tuple[str, list[str]]:
    """('conv', ['32', '5']) for 'conv:32:5'; raises ValueError naming the token."""
    kind, *args = token.split(":")
    if kind not in MASKABLE + OTHERS:
        raise ValueError(f"layer {token!r}: unknown kind {kind!r}; allowed: {MASKABLE + OTHERS}")
    numbers = 2 if kind in ("conv", "convT") else 1
    for option in args[numbers:]:
        allowed = _OPTIONS[kind]
        stride = option.startswith("s") and option[1:].isdigit() and "sN" in allowed
        if option not in allowed and not stride:
            raise ValueError(f"layer {token!r}: unknown option {option!r}; allowed: {allowed}")
    return kind, args


def layer_names(layers: Sequence[str]) -> list[str]:
    """The maskable layers' names, in order: conv_0, conv_1, dense_0, ..."""
    counts: dict[str, int] = {}
    names = []
    for token in layers:
        kind, _ = parse(token)
        if kind in MASKABLE:
            names.append(f"{kind}_{counts.get(kind, 0)}")
            counts[kind] = counts.get(kind, 0) + 1
    return names


def _check_ranks(layers: Sequence[str], ranks: Mapping[str, int] | None) -> dict[str, int]:
    """`ranks` as a dict; raises ValueError for an unknown or transposed layer or a rank < 1."""
    ranks = dict(ranks or {})
    names = layer_names(layers)
    for name, rank in ranks.items():
        if name not in names:
            raise ValueError(f"ranks: no maskable layer {name!r}; layers: {names}")
        if name.startswith("convT_"):
            raise ValueError(f"ranks: {name!r} is a transposed convolution; only conv and dense")
        if int(rank) < 1:
            raise ValueError(f"ranks: layer {name!r} has rank {rank}; at least 1")
    return {name: int(rank) for name, rank in ranks.items()}


class Sequential(nn.Module):
    """A chain of masked layers (see the module docstring).

    Attributes:
      layers: the layer strings.
      init_std: > 0: kernels and biases drawn from a normal truncated at 2 std (the
        thesis FCN's "predefined distribution", std 0.05); 0: Flax's defaults
        (LeCun normal kernels, zero biases).
      init_scheme: 'default' (`init_std` decides) or 'he': thesis 004's initialisation (2.6 and
        A.4): kernels from a zero-mean normal of std sqrt(2 / n), n the incoming
        connections per output, the variance a ReLU layer keeps; the first layer, whose
        input has no ReLU before it, "Xavier": std sqrt(1 / n); zero biases.
      final_activation: apply the ReLU after the last layer too (the edge FCN does:
        its targets are non-negative).
      precision: convolution and matmul precision; 'highest' keeps true float32 on
        GPUs that would otherwise use TF32.
      widths: units per maskable layer name, overriding the strings (the compact
        network of `export`).
      ranks: rank per maskable layer name of the layers to factorize (see the module
        docstring; conv and dense layers only). None or empty: no factorization.
      bypass: a same-shape layer with no live unit passes its input on (see the
        module docstring); False: the thesis's fixed depth.
      conv: how convolutions are computed, one of `convs.IMPLEMENTATIONS`: 'auto'
        (the direct form for few-channel layers on a CPU, else XLA's), 'xla'
        (`lax.conv_general_dilated`), 'taps' (XLA's forward pass, the kernel gradient
        as per-tap matrix products), 'direct' (shifted planes times kernel scalars),
        'packed' / 'packed:K' (under `vmap`, K runs per block-diagonal group) or
        'pallas' (a Pallas kernel; interpret mode on a CPU).
    """

    layers: Sequence[str]
    init_std: float = 0.0
    init_scheme: str = "default"
    final_activation: bool = False
    precision: str | None = "highest"
    widths: Mapping[str, int] | None = None
    ranks: Mapping[str, int] | None = None
    conv: str = "auto"
    bypass: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, masks: Mapping[str, jax.Array], train: bool = False):
        names = iter(layer_names(self.layers))
        first, last = layer_names(self.layers)[0], layer_names(self.layers)[-1]
        ranks = _check_ranks(self.layers, self.ranks)
        conv_fn = convs.conv_fn(self.conv)  # checks the name
        conv_kw = {} if self.conv == "xla" else {"conv_general_dilated": conv_fn}
        for token in self.layers:
            kind, args = parse(token)
            if kind in ("maxpool", "dropout"):
                x = _unmasked_layer(x, kind, args, train)
                continue
            name = next(names)
            inits = _initializers(self.init_std, self.init_scheme, first=name == first)
            units = int(args[0])
            if self.widths is not None:
                units = int(self.widths[name])
                if units == 0 and self.bypass:
                    continue  # a bypassed layer, left out of the compact network
            inputs = x
            if kind in ("conv", "convT"):
                rank = ranks.get(name)
                x = _conv(x, kind, args, units, name, rank, inits, self.precision, conv_kw)
            else:
                x = _dense(x, units, name, ranks.get(name), inits, self.precision)
            if "bn" in args:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=BN_MOMENTUM,
                    epsilon=BN_EPSILON,
                    name=f"{name}_bn",
                )(x)
            if name != last or self.final_activation:
                x = nn.relu(x)
            # Masking after the activation makes a disabled unit's output exactly zero.
            mask = jnp.asarray(masks[name])
            x = x * mask.astype(x.dtype)
            if self.bypass and name != last and x.shape == inputs.shape:
                x = jnp.where(jnp.any(mask), x, inputs)  # the layer's gate
        return x


INITS = ("default", "he")


def _initializers(
    init_std: float, scheme: str = "default", first: bool = False
) -> tuple[Callable, Callable]:
    """(kernel, bias) initializers: thesis 004's ('he'; the first layer's "Xavier"), a
    truncated normal of `init_std`, or Flax's defaults."""
    if scheme == "he":
        scale = 1.0 if first else 2.0  # Var[w] = 1 / n, or 2 / n behind a ReLU (A.57)
        return nn.initializers.variance_scaling(scale, "fan_in", "normal"), nn.initializers.zeros
    if scheme != "default":
        raise ValueError(f"init_scheme: {scheme!r}; one of {INITS}")
    if init_std > 0:
        return (nn.initializers.truncated_normal(init_std),) * 2
    return nn.initializers.lecun_normal(), nn.initializers.zeros


def _unmasked_layer(x: jax.Array, kind: str, args, train: bool) -> jax.Array:
    """A layer without units: ``maxpool`` or ``dropout``."""
    if kind == "maxpool":
        w = int(args[0])
        s = _stride(args[1:], w)
        padding = "SAME" if "same" in args[1:] else "VALID"
        return nn.max_pool(x, window_shape=(w, w), strides=(s, s), padding=padding)
    return nn.Dropout(float(args[0]), deterministic=not train)(x)


def _conv(x, kind: str, args, units: int, name: str, rank, inits, precision, conv_kw):
    """A ``conv`` or ``convT`` layer; with `rank`, the K x 1 then 1 x K factorized conv."""
    kernel_init, bias_init = inits
    k = int(args[1])
    options = args[2:]
    stride = _stride(options, 1)
    padding = "VALID" if "valid" in options else "SAME"
    layer = nn.Conv if kind == "conv" else nn.ConvTranspose
    kernel, strides = (k, k), (stride, stride)
    if rank is not None:
        # Per-dimension padding: exactly the K x K convolution of the product.
        x = nn.Conv(
            rank,
            (k, 1),
            strides=(stride, 1),
            padding=padding,
            use_bias=False,
            kernel_init=kernel_init,
            precision=precision,
            name=f"{name}_v",
            **conv_kw,
        )(x)
        kernel, strides = (1, k), (1, stride)
    return layer(
        units,
        kernel,
        strides=strides,
        padding=padding,
        kernel_init=kernel_init,
        bias_init=bias_init,
        precision=precision,
        name=name,
        **(conv_kw if kind == "conv" else {}),
    )(x)


def _dense(x, units: int, name: str, rank, inits, precision):
    """A ``dense`` layer (after an NHWC flatten); with `rank`, through `rank` inputs first."""
    kernel_init, bias_init = inits
    if x.ndim > 2:
        x = x.reshape(x.shape[0], -1)  # NHWC flatten: unit c feeds c, c+C, ...
    if rank is not None:
        x = nn.Dense(
            rank, use_bias=False, kernel_init=kernel_init, precision=precision, name=f"{name}_in"
        )(x)
    return nn.Dense(
        units, kernel_init=kernel_init, bias_init=bias_init, precision=precision, name=name
    )(x)
