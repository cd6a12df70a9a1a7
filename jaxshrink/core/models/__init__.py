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

Your own module: `Model.create(build, input_shape, layers)` (see `models.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from jaxshrink.core.models import sequential
from jaxshrink.core.models.base import Model

__all__ = ["FAMILIES", "Model", "get_model", "layer_strings", "sequential_model"]


def _fcn(c) -> tuple[list[str], bool]:
    k, f = int(c.kernel_size), int(c.num_filters)
    hidden = [f"conv:{f}:{k}"] * (int(c.num_layers) - 1)
    return hidden + [f"conv:{int(c.out_channels)}:{k}"], True


def _mlp(c) -> tuple[list[str], bool]:
    return [f"dense:{int(h)}" for h in c.hidden] + [f"dense:{int(c.out_features)}"], False


def _cnn(c) -> tuple[list[str], bool]:
    return list(c.layers), bool(c.get("final_activation", False))


# name -> model config -> (layer strings, ReLU after the last layer)
FAMILIES: dict[str, Callable] = {"fcn": _fcn, "mlp": _mlp, "cnn": _cnn}


def layer_strings(model_cfg) -> tuple[list[str], bool]:
    """The `sequential` layer strings of `model_cfg` and its final-activation flag."""
    return FAMILIES[model_cfg.name](model_cfg)


def sequential_model(
    layers: Sequence[str],
    input_shape: Sequence[int],
    *,
    init_std: float = 0.0,
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
    layers, final = layer_strings(model_cfg)
    return sequential_model(
        layers,
        input_shape,
        init_std=float(model_cfg.init_std),
        final_activation=final,
        precision=model_cfg.precision,
        conv=model_cfg.conv,
        bypass=bool(model_cfg.bypass),
    )
