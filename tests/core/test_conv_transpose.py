"""Transposed convolutions: masked, frozen, exported and counted like any other layer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxshrink.config import schema as config_lib
from jaxshrink.core import models, optim, spec
from jaxshrink.deploy import export

# conv stride 2 (8x8 -> 4x4), transposed conv stride 2 (4x4 -> 8x8), conv to one map.
LAYERS = ["conv:4:3:s2", "convT:3:3:s2", "conv:1:3"]


def _model():
    return models.sequential_model(LAYERS, (8, 8, 1), final_activation=True)


def _masks(model):
    masks = spec.full(model.spec)
    masks["conv_0"] = masks["conv_0"].at[2].set(False)
    masks["convT_0"] = masks["convT_0"].at[1].set(False)
    return masks


def test_spec_of_a_transposed_convolution():
    layer = _model().spec.layer("convT_0")
    assert (layer.kind, layer.units, layer.in_features, layer.window) == ("conv_transpose", 3, 4, 9)
    assert layer.positions == 4 * 4  # applied at the *input* pixels, each scattering 3x3
    assert layer.owns[0] == spec.Leaf(("convT_0", "kernel"), -1)  # Flax: (k, k, in, out)


def test_flops_by_hand():
    model = _model()
    # conv_0: 16 * (2*9*1*4 + 4); convT_0: 16 * (2*9*4*3 + 3); conv_1: 64 * (2*9*3*1 + 1)
    assert spec.count_flops(model.spec) == 1216 + 3504 + 3520
    # conv_0 keeps 3, convT_0 reads 3 and keeps 2, conv_1 reads 2.
    assert spec.count_flops(model.spec, _masks(model)) == 16 * 57 + 16 * 110 + 64 * 37


def test_masked_equals_exported_and_the_unit_is_gone():
    model = _model()
    params = model.init(jax.random.PRNGKey(0))
    masks = _masks(model)
    small = export.compact(model.spec, params, masks)
    assert small["convT_0"]["kernel"].shape == (3, 3, 3, 2)
    np.testing.assert_array_equal(
        small["convT_0"]["kernel"],
        np.asarray(params["convT_0"]["kernel"])[:, :, [0, 1, 3]][..., [0, 2]],
    )
    compact = model.at_widths(model.spec.widths(masks))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    want = model.apply(params, masks, x)
    got = compact.apply(small, spec.full(compact.spec), x)
    assert want.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_a_frozen_transposed_unit_gets_no_update():
    model = _model()
    params = model.init(jax.random.PRNGKey(0))
    tx = optim.make_optimizer(config_lib.base_config("sobel").optim, model.spec, params)
    frozen = spec.full(model.spec, False)
    frozen["convT_0"] = frozen["convT_0"].at[1].set(True)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, spec.full(model.spec), x) ** 2))(params)
    updates, _ = tx.update(grads, tx.init(params), params, frozen=frozen)
    kernel, bias = updates["convT_0"]["kernel"], updates["convT_0"]["bias"]
    assert not np.any(np.asarray(kernel[..., 1])) and float(bias[1]) == 0.0
    assert np.any(np.asarray(kernel[..., 0])) and np.any(np.asarray(kernel[..., 2]))
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(
        new["convT_0"]["kernel"][..., 1], params["convT_0"]["kernel"][..., 1]
    )
