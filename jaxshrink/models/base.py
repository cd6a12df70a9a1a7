"""`Model`: a Flax module, its spec, and how to build it at other widths.

This is the whole interface between a network and the shrinking machinery. Any Flax
module works if it

1. is called as ``module(x, masks, train=False)`` and multiplies each maskable
   layer's output (after its activation) by ``masks[name]``, one bool per unit, so
   a disabled unit outputs exactly zero;
2. can be built at other widths: ``build(widths)`` returns the same network with
   ``widths[name]`` units in layer `name` (``build(None)``: the full size). Export
   uses it to build the physically smaller network.

`Model.create(build, input_shape, layers)` traces the module once (`spec.trace`) to
describe its maskable layers; everything else reads `model.spec`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax

from jaxshrink import spec as spec_lib


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A maskable network (see the module docstring).

    Attributes:
      module: the full-size Flax module.
      spec: the static description of its maskable layers.
      build: widths -> module (None: full size).
      layers: the maskable layers' names, in network order.
      candidates: the layers whose units may be disabled.
    """

    module: nn.Module
    spec: spec_lib.ModelSpec
    build: Callable[[Mapping[str, int] | None], nn.Module]
    layers: tuple[str, ...]
    candidates: tuple[str, ...]

    @classmethod
    def create(
        cls,
        build: Callable[[Mapping[str, int] | None], nn.Module],
        input_shape: Sequence[int],
        layers: Sequence[str],
        candidates: Sequence[str] | None = None,
    ) -> Model:
        """Builds the full-size module and traces its spec.

        Args:
          build: widths -> Flax module (None: the full size).
          input_shape: one example's shape, e.g. (28, 28, 1).
          layers: the maskable sub-modules in network order ('/'-joined paths).
          candidates: layers whose units may be disabled (default: all but the last,
            the output layer).
        """
        module = build(None)
        layers = tuple(layers)
        candidates = tuple(layers[:-1] if candidates is None else candidates)
        spec = spec_lib.trace(module, input_shape, layers, candidates=candidates)
        return cls(module, spec, build, layers, candidates)

    def init(self, rng: jax.Array) -> dict:
        """Fresh parameters."""
        x = jax.numpy.zeros((1, *self.spec.input_shape), jax.numpy.float32)
        masks = spec_lib.full(self.spec)
        return self.module.init(rng, x, masks, train=False)["params"]

    def apply(self, params, masks, x, *, train: bool = False, rng: jax.Array | None = None):
        """The pure forward pass; `rng` feeds dropout when `train`."""
        rngs = {"dropout": rng} if rng is not None else {}
        return self.module.apply({"params": params}, x, masks, train=train, rngs=rngs)

    def at_widths(self, widths: Mapping[str, int]) -> Model:
        """The same network with `widths[name]` units per layer (export's compact one)."""
        return Model.create(
            lambda _: self.build(dict(widths)), self.spec.input_shape, self.layers, self.candidates
        )
