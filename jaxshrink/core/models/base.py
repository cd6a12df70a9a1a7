"""`Model`: a Flax module, its spec, and how to build it at other widths.

This is the whole interface between a network and the shrinking machinery. Any Flax
module works if it

1. is called as ``module(x, masks, train=False)`` and multiplies each maskable
   layer's output (after its normalisation and activation) by ``masks[name]``, one
   bool per unit, so a disabled unit outputs exactly zero;
2. can be built at other widths: ``build(widths)`` returns the same network with
   ``widths[name]`` units in layer `name` (``build(None)``: the full size). Export
   uses it to build the physically smaller network.

Optionally, a layer whose input and output shapes are equal may be *bypassable*: the
module returns its input in place of its output when none of its units is alive
(``jnp.where(jnp.any(masks[name]), out, x)``), and ``build`` leaves it out for
``widths[name] == 0``. Declare such layers with ``bypassable=`` in `Model.create`; a
minimization can then remove whole layers (`minimize`, ``minimize.depth``).

*A module as researchers write it* (no masks, no widths, any dataflow: residual adds,
concatenations, depthwise convolutions) is wrapped with `Model.wrap(module,
input_shape)`: its layers are then its channel groups (`jaxshrink.core.groups`), the
masks are applied to its variables (`masked_params`), and the physically smaller
network is its own program rewritten at the kept widths (`jaxshrink.core.shrink`,
`small_program`) instead of a module built at other widths.

`Model.create(build, input_shape, layers)` traces the module once (`spec.trace`) to
describe its maskable layers; everything else reads `model.spec`. That description is
a chain (each layer feeds the next), so the module's dataflow is checked against it
before any training: a residual add, a concatenation or a skip connection between
listed layers would make disabled units nonzero and the exported network another one,
and such a module is refused in one line naming the layer (`spec.check_chain`).

Optionally, ``factorized(widths, ranks)`` builds the network with low-rank layers
(`jaxshrink.deploy.lowrank`; `models.sequential_model` provides it). Without it a low-rank
network can still be scored on reconstructed kernels, not built physically.

Variables other than 'params' (batch norm's running statistics, collection
'batch_stats') are the model's *state*: `init_variables` returns it beside the params,
`apply` reads it, `train_apply` returns its update. A run keeps it in
`train.TrainState.model_state`, so rollback, batching over runs and checkpoints
treat it exactly like the params.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.core import spec as spec_lib


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A maskable network (see the module docstring).

    Attributes:
      module: the full-size Flax module.
      spec: the static description of its maskable layers.
      build: widths -> module (None: full size).
      layers: the maskable layers' names, in network order.
      candidates: the layers whose units may be disabled.
      factorized: (widths, ranks) -> the module with ``ranks[name]``-rank factorized
        layers (`jaxshrink.deploy.lowrank`; widths None: this model's own); None when the
        model cannot be built factorized.
      graph: the channel graph of a wrapped module (`wrap`), whose layers are its
        groups; None for a module that takes masks.
      takes_train: whether the module is called with ``train=``.
    """

    module: nn.Module
    spec: spec_lib.ModelSpec
    build: Callable[[Mapping[str, int] | None], nn.Module]
    layers: tuple[str, ...]
    candidates: tuple[str, ...]
    factorized: Callable[[Mapping[str, int] | None, Mapping[str, int]], nn.Module] | None = None
    graph: Any = None
    takes_train: bool = True

    @classmethod
    def wrap(cls, module: nn.Module, input_shape: Sequence[int], log=None) -> Model:
        """A plain Flax module, unmodified: called as ``module(x)`` or ``module(x,
        train=...)``; its layers are its removable channel groups (`groups.describe`).

        Raises:
          ValueError: no channel of the module can be removed.
        """
        from jaxshrink.core import groups  # the graph's reader, only for wrapped modules

        spec, graph = groups.describe(module, input_shape, log=log)
        return cls(
            module=module,
            spec=spec,
            build=None,
            layers=tuple(spec.names),
            candidates=tuple(spec.names),
            graph=graph,
            takes_train=groups.takes_train(module),
        )

    @property
    def wrapped(self) -> bool:
        """A plain module described by its channel graph (`wrap`)."""
        return self.graph is not None

    @classmethod
    def create(
        cls,
        build: Callable[[Mapping[str, int] | None], nn.Module],
        input_shape: Sequence[int],
        layers: Sequence[str],
        candidates: Sequence[str] | None = None,
        factorized: (
            Callable[[Mapping[str, int] | None, Mapping[str, int]], nn.Module] | None
        ) = None,
        bypassable: Sequence[str] | str = (),
    ) -> Model:
        """Builds the full-size module and traces its spec.

        Args:
          build: widths -> Flax module (None: the full size).
          input_shape: one example's shape, e.g. (28, 28, 1).
          layers: the maskable sub-modules in network order ('/'-joined paths).
          candidates: layers whose units may be disabled (default: all but the last,
            the output layer).
          factorized: optional (widths, ranks) -> the module with factorized layers.
          bypassable: candidate layers the module bypasses when none of their units
            is alive, or 'auto' (every candidate layer that keeps its input's shape;
            see the module docstring and `spec.trace`).

        Raises:
          ValueError: a listed layer is missing or not maskable, or the sizes do not
            chain (`spec.trace`).
          errors.ConfigError: the module's dataflow is not the chain its layers
            describe (`spec.check_chain`: a residual add, a concatenation, an
            unmasked layer), in one line naming the first such layer.
        """
        module = build(None)
        layers = tuple(layers)
        candidates = tuple(layers[:-1] if candidates is None else candidates)
        spec = spec_lib.trace(
            module, input_shape, layers, candidates=candidates, bypassable=bypassable
        )
        return cls(module, spec, build, layers, candidates, factorized)

    def init_variables(self, rng: jax.Array) -> tuple[dict, dict]:
        """Fresh ``(params, state)``: `state` holds the other variable collections
        (batch norm's running statistics, ``{'batch_stats': ...}``); ``{}`` if none."""
        return self._compiled_init(rng)

    @functools.cached_property
    def _compiled_init(self) -> Callable[[jax.Array], tuple[dict, dict]]:
        # One compiled program per model, instead of the initializers' and the
        # shape-finding forward pass's operations dispatched one by one (each compiled
        # on first use): a run's first seconds. The values are the same.
        def init(rng):
            x = jnp.zeros((1, *self.spec.input_shape), jnp.float32)
            masks = () if self.wrapped else (spec_lib.full(self.spec),)
            variables = dict(self.module.init(rng, x, *masks, **self._train(False)))
            params = variables.pop("params")
            return params, variables

        return jax.jit(init)

    def init(self, rng: jax.Array) -> dict:
        """Fresh parameters (`init_variables` without the state)."""
        return self.init_variables(rng)[0]

    def apply(
        self,
        params,
        masks,
        x,
        *,
        state: Mapping | None = None,
        train: bool = False,
        rng: jax.Array | None = None,
    ):
        """The pure forward pass: the output only.

        `state` is needed by a model with batch norm; with ``train=True`` its batch
        statistics are used and the updated running ones dropped (`train_apply` keeps
        them). `rng` feeds dropout when `train`.
        """
        if train:
            return self.train_apply(params, state or {}, masks, x, rng)[0]
        return self._apply(params, state or {}, masks, x, **self._train(False))

    def train_apply(self, params, state: Mapping, masks, x, rng: jax.Array | None = None):
        """The training forward pass: ``(output, new state)``.

        Batch norm normalises with the batch's statistics and moves its running ones;
        ``new state`` has the structure of `state` (``{}`` for a model without).
        """
        rngs = {"dropout": rng} if rng is not None else {}
        kwargs = {"rngs": rngs, **self._train(True)}
        if not state:
            return self._apply(params, state, masks, x, **kwargs), {}
        out, new = self._apply(params, state, masks, x, mutable=list(state), **kwargs)
        return out, dict(new)

    def _apply(self, params, state: Mapping, masks, x, **kwargs):
        """``module.apply`` with the masks where the module takes them.

        A wrapped module gets them on its variables (`masked_params`). Float masks
        (a strategy differentiating by them, as the Taylor score does) also scale
        each group's pre-activation output (`spec.Layer.preactivation_path`), so that
        the derivative by a channel's mask is that of its first producer's output, as
        it is for a module that multiplies its outputs by its masks.
        """
        variables, args = self._inputs(params, state, masks)
        leaves = jax.tree.leaves(masks)
        floating = any(jnp.issubdtype(jnp.asarray(m).dtype, jnp.floating) for m in leaves)
        if not (self.wrapped and floating):
            return self.module.apply(variables, x, *args, **kwargs)
        scales = {layer.preactivation_path(): masks[layer.name] for layer in self.spec.layers}

        def scale(next_fun, call_args, call_kwargs, context):
            out = next_fun(*call_args, **call_kwargs)
            factor = scales.get(tuple(context.module.path))
            if context.method_name != "__call__" or factor is None:
                return out
            return out * factor.astype(out.dtype)

        with nn.intercept_methods(scale):
            return self.module.apply(variables, x, *args, **kwargs)

    def masked_params(self, params, masks):
        """`params` with the producer slices of disabled channels zeroed: what a wrapped
        module computes with (for a module that takes masks, `params` itself)."""
        if not self.wrapped:
            return params
        keep = spec_lib.expand(self.spec, masks, params, fill=True)
        return jax.tree.map(lambda p, k: p * k.astype(p.dtype), params, keep)

    def capture(self, params, state: Mapping, masks, x, paths) -> dict:
        """``{module path: output}`` of the sub-modules at `paths` (inference call)."""
        paths = set(paths)
        variables, args = self._inputs(params, state, masks)
        _, captured = self.module.apply(
            variables,
            x,
            *args,
            capture_intermediates=lambda mdl, method: method == "__call__" and mdl.path in paths,
            mutable=["intermediates"],
            **self._train(False),
        )
        out = {}
        for path in paths:
            node = captured["intermediates"]
            for key in path:
                node = node[key]
            out[path] = node["__call__"][0]
        return out

    def group_keep(self, masks) -> list:
        """The masks as `graph` takes them: one vector per group (None: kept whole)."""
        names = iter(self.spec.names)
        return [
            np.asarray(masks[next(names)], bool) if group.removable else None
            for group in self.graph.groups
        ]

    def small_program(self, variables: Mapping, masks) -> tuple[Callable, dict]:
        """``(small_fn, small_variables)`` of a wrapped module: ``small_fn(
        small_variables, x)`` is its inference call with the disabled channels removed,
        equal to the masked network to float rounding.

        The program is rewritten for one example (`jaxshrink.core.shrink.smaller`
        ties it to its example's shapes) and mapped over the batch with `jax.vmap`,
        so it takes any batch size, a symbolic one too (ONNX): inference treats each
        example alone, which `deploy.export` checks against the masked network.
        """
        from jaxshrink.core import groups, shrink

        fn = groups.forward(self.module, self.takes_train)
        one = jnp.zeros((1, *self.spec.input_shape), jnp.float32)
        keep = self.group_keep(masks)
        single, small = shrink.smaller(fn, dict(variables), (one,), self.graph, keep)

        # Jitted so that its variables are traced even when a caller closes over them:
        # what depends on weights alone then stays an operation (a bias broadcast over
        # the image), not a constant the size of an activation in an ONNX file.
        single = jax.jit(single)

        def small_fn(small_variables, x):
            def example(xi):
                return jax.tree.map(lambda y: y[0], single(small_variables, xi[None]))

            return jax.vmap(example)(x)

        return small_fn, small

    def _inputs(self, params, state: Mapping, masks) -> tuple[dict, tuple]:
        """The module's variables and the positional arguments after ``x``."""
        if self.wrapped:
            return {"params": self.masked_params(params, masks), **state}, ()
        return {"params": params, **state}, (masks,)

    def _train(self, train: bool) -> dict:
        return {"train": train} if self.takes_train else {}

    def at_widths(self, widths: Mapping[str, int]) -> Model:
        """The same network with `widths[name]` units per layer (export's compact one);
        a bypassable layer of width 0 is left out.

        Raises:
          TypeError: a wrapped module, which has no builder (`small_program`).
        """
        if self.wrapped:
            raise TypeError(
                "a wrapped module cannot be built at other widths; its smaller network is "
                "its program rewritten at the kept widths (Model.small_program)"
            )
        factorized = None
        if self.factorized is not None:
            outer = self.factorized

            def factorized(at, ranks):
                return outer(dict(widths) if at is None else at, ranks)

        kept = [name for name in self.layers if widths[name] > 0]
        # The compact module bypasses what keeps its shape at the new widths.
        bypass = "auto" if self.spec.bypassable else ()
        return Model.create(
            lambda _: self.build(dict(widths)),
            self.spec.input_shape,
            kept,
            [name for name in self.candidates if name in kept],
            factorized=factorized,
            bypassable=bypass,
        )
