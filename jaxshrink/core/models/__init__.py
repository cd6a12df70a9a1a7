"""The registered networks and the one way to build a configured one.

`get_model(model_cfg, input_shape)` returns a `Model` (see `models.base`). Families:

* ``fcn``: the edge-detection network of thesis 001 (2.3): `num_layers` 'SAME'
  convolutions of `num_filters` K x K filters, the last with `out_channels`, ReLU
  after every layer (also the last), truncated normal init (std 0.05).

Any family: ``model.bypass=True`` makes every same-shape hidden layer bypassable
(removable from the depth by its masks, `models.sequential`).
* ``mlp``: dense layers of `hidden` units with ReLU, then `out_features` linear
  outputs: the summation network of thesis 003 (2.7.1) is hidden (1000,), 1 output.
* ``cnn``: any chain of `layers` strings (`models.sequential`): the MNIST
  classifiers of thesis 004 (Table 3.2) and 003 (Table 2.3).

Networks in plain Flax, without masks (`models.zoo`), described by their channel
graph (`Model.wrap`); their layers are their channel groups:

* ``resnet``: the CIFAR ResNet (`zoo.CifarResNet`): `depth` (6n + 2: 20, 56, ...),
  `widths` (one per stage), `num_classes`;
* ``unet``: a small U-Net (`zoo.UNet`): `widths` (levels, then the bottleneck),
  `out_channels`;
* ``mobilenet``: inverted residual blocks (`zoo.MobileNetLike`): `stem_width`,
  `stem_stride`,
  `blocks` ((expand, features, stride) each), `num_classes`.

Your own module: `Model.wrap(module, input_shape)` for a plain one, or
`Model.create(build, input_shape, layers)` for one that takes masks (see
`models.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from jaxshrink.core.models import sequential, zoo
from jaxshrink.core.models.base import Model

__all__ = ["FAMILIES", "PLAIN", "Model", "get_model", "layer_strings", "sequential_model"]


def _fcn(c) -> tuple[list[str], bool]:
    k, f = int(c.kernel_size), int(c.num_filters)
    hidden = [f"conv:{f}:{k}"] * (int(c.num_layers) - 1)
    return hidden + [f"conv:{int(c.out_channels)}:{k}"], True


def _mlp(c) -> tuple[list[str], bool]:
    return [f"dense:{int(h)}" for h in c.hidden] + [f"dense:{int(c.out_features)}"], False


def _cnn(c) -> tuple[list[str], bool]:
    return list(c.layers), bool(c.get("final_activation", False))


def _resnet(c):
    return zoo.CifarResNet(
        depth=int(c.depth), widths=tuple(int(w) for w in c.widths), num_classes=int(c.num_classes)
    )


def _unet(c):
    return zoo.UNet(widths=tuple(int(w) for w in c.widths), out_channels=int(c.out_channels))


def _mobilenet(c):
    return zoo.MobileNetLike(
        num_classes=int(c.num_classes),
        stem_width=int(c.stem_width),
        stem_stride=int(c.stem_stride),
        blocks=tuple(tuple(int(v) for v in block) for block in c.blocks),
    )


def _decomposeme(c):
    return zoo.DecomposeMeCNN(
        convs=tuple((int(f), int(k), int(p), str(pad)) for f, k, p, pad in c.convs),
        num_classes=int(c.num_classes),
        pools=int(c.pools),
    )


# name -> model config -> (layer strings, ReLU after the last layer)
CHAINS: dict[str, Callable] = {"fcn": _fcn, "mlp": _mlp, "cnn": _cnn}
# name -> model config -> a plain Flax module (wrapped: its layers are channel groups)
PLAIN: dict[str, Callable] = {
    "resnet": _resnet,
    "unet": _unet,
    "mobilenet": _mobilenet,
    "decomposeme": _decomposeme,
}
FAMILIES: dict[str, Callable] = {**CHAINS, **PLAIN}


def layer_strings(model_cfg) -> tuple[list[str], bool]:
    """The `sequential` layer strings of `model_cfg` and its final-activation flag."""
    return CHAINS[model_cfg.name](model_cfg)


def sequential_model(
    layers: Sequence[str],
    input_shape: Sequence[int],
    *,
    init_std: float = 0.0,
    init_scheme: str = "default",
    final_activation: bool = False,
    precision: str | None = "highest",
    conv: str = "xla",
    bypass: bool = False,
) -> Model:
    """A `Model` of a `sequential.Sequential` chain of layer strings (with `factorized`:
    the same chain with low-rank layers, see `jaxshrink.deploy.lowrank`)."""
    layers = tuple(layers)

    def factorized(widths: Mapping[str, int] | None, ranks: Mapping[str, int] | None):
        return sequential.Sequential(
            layers=layers,
            init_std=init_std,
            init_scheme=init_scheme,
            final_activation=final_activation,
            precision=precision,
            conv=conv,
            bypass=bypass,
            widths=None if widths is None else dict(widths),
            ranks=dict(ranks) if ranks else None,
        )

    def build(widths: Mapping[str, int] | None):
        return factorized(widths, None)

    return Model.create(
        build,
        input_shape,
        sequential.layer_names(layers),
        factorized=factorized,
        bypassable="auto" if bypass else (),
    )


def get_model(model_cfg, input_shape: Sequence[int]) -> Model:
    """The configured network for examples of `input_shape` (e.g. (64, 64, 1))."""
    if model_cfg.name in PLAIN:
        return Model.wrap(PLAIN[model_cfg.name](model_cfg), input_shape)
    layers, final = layer_strings(model_cfg)
    return sequential_model(
        layers,
        input_shape,
        init_std=float(model_cfg.init_std),
        init_scheme=model_cfg.init_scheme,
        final_activation=final,
        precision=model_cfg.precision,
        conv=model_cfg.conv,
        bypass=bool(model_cfg.bypass),
    )
