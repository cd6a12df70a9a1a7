"""The thesis's fully convolutional network as a pure function of params and masks.

`apply(params, masks, x)` runs `num_layers` 'SAME' convolutions (stride 1, bias,
ReLU after every layer, thesis section 2.3). `masks` holds one boolean per output
unit (filter) of every layer; a disabled unit's activation is multiplied by zero
after the ReLU, so its output is exactly zero whatever its weights, and so are the
gradients of its kernel and bias. The network therefore computes the same function
as one with that unit physically removed (see `export`), while every shape stays
fixed during the search: masks are traced data, so changing them never recompiles.

Parameter tree (Flax naming)::

    {'conv_0': {'kernel': (k, k, 1, F), 'bias': (F,)},
     'conv_1': {'kernel': (k, k, F, F), 'bias': (F,)},
     ...
     'conv_{L-1}': {'kernel': (k, k, F, 1), 'bias': (1,)}}

Mask tree: ``{'conv_i': bool[(units of layer i)]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxshrink import masks as masks_lib


def layer_features(model_cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Output units per layer: `num_filters` for hidden layers, `out_channels` last."""
    hidden = (int(model_cfg.num_filters),) * (int(model_cfg.num_layers) - 1)
    return hidden + (int(model_cfg.out_channels),)


class FCN(nn.Module):
    """Masked fully convolutional network (thesis Figure 2.1).

    Attributes:
      features: output units of each layer.
      kernel_size: square kernel side (thesis: 5).
      init_std: std of the truncated normal (cut at 2 std) used for kernels and
        biases (thesis: mean 0, std 0.05, "initialized randomly with a predefined
        distribution" for both).
      precision: convolution precision; 'highest' keeps true float32 on GPUs that
        would otherwise use TF32.
    """

    features: Sequence[int]
    kernel_size: int = 5
    init_std: float = 0.05
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, masks: dict[str, jax.Array]) -> jax.Array:
        init = nn.initializers.truncated_normal(self.init_std)
        for i, units in enumerate(self.features):
            name = f"conv_{i}"
            x = nn.Conv(
                units,
                (self.kernel_size, self.kernel_size),
                strides=1,
                padding="SAME",
                kernel_init=init,
                bias_init=init,
                precision=self.precision,
                name=name,
            )(x)
            # Masking after the ReLU makes a disabled unit's output exactly zero.
            x = nn.relu(x) * masks[name].astype(x.dtype)
        return x


def build_model(model_cfg: ml_collections.ConfigDict) -> FCN:
    """The Flax module described by `config.model`."""
    return FCN(
        features=layer_features(model_cfg),
        kernel_size=int(model_cfg.kernel_size),
        init_std=float(model_cfg.init_std),
        precision=model_cfg.get("precision", "highest"),
    )


def init(rng: jax.Array, config: ml_collections.ConfigDict) -> dict:
    """Fresh parameters of the configured network."""
    module = build_model(config.model)
    features = layer_features(config.model)
    masks = {f"conv_{i}": jnp.ones((f,), bool) for i, f in enumerate(features)}
    x = jnp.zeros((1, 8, 8, int(config.model.in_channels)), jnp.float32)
    return module.init(rng, x, masks)["params"]


def make_apply(config: ml_collections.ConfigDict):
    """Returns the pure `apply(params, masks, x) -> y` of the configured network."""
    module = build_model(config.model)

    def apply(params: dict, masks: dict, x: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x, masks)

    return apply


def init_masks(params: dict) -> dict:
    """All units enabled."""
    return masks_lib.full(params)
