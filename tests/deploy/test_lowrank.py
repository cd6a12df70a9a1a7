"""Low-rank factorization: exact at full rank, hand-counted costs, the threshold search."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.config import schema as config_lib
from jaxshrink.core import models
from jaxshrink.core import spec as spec_lib
from jaxshrink.core.models import sequential
from jaxshrink.deploy import lowrank

FCN = models.get_model(config_lib.base_config("sobel").model, (12, 12, 1))  # 1 -> 5 -> 5 -> 1
# SAME stride 1, SAME stride 2 (height 8: padding (0, 1); width 7: (1, 1)), VALID with
# batch norm, then a dense layer on the flattened 2 x 2 x 2 map.
CNN = models.sequential_model(
    ("conv:4:3", "conv:3:3:s2", "conv:2:3:valid:bn", "dense:3"), (8, 7, 2)
)
MLP = models.sequential_model(("dense:5", "dense:3"), (6,))


def _random(seed, shape, std=0.5):
    """Arrays from numpy: each new shape of a jax.random call costs a compile."""
    return jnp.asarray(np.random.default_rng(seed).normal(0, std, shape), jnp.float32)


def _variables(model, seed):
    """Random params (biases and batch-norm scales too) and the zero/one state."""
    params, state = jax.eval_shape(model.init_variables, jax.random.PRNGKey(0))
    leaves, tree = jax.tree.flatten(params)
    params = jax.tree.unflatten(tree, [_random(seed + i, s.shape) for i, s in enumerate(leaves)])
    state = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype) * 0.5, state)
    return params, state


def _kernel_shapes(model, params):
    return {layer.name: spec_lib.get(params, layer.kernel).shape for layer in model.spec.layers}


# ------------------------------------------------------------------ exact factorization


def test_dense_full_rank_factors_multiply_back():
    w = np.asarray(_random(0, (6, 4)))
    o, p = lowrank.factor("dense", w, lowrank.max_rank("dense", w.shape))
    assert o.shape == (6, 4) and p.shape == (4, 4) and o.dtype == np.float32
    np.testing.assert_allclose(o @ p, w, atol=1e-5)


def test_matrix_of_is_the_documented_reshape():
    k = np.asarray(_random(1, (3, 3, 2, 4)))
    m = lowrank.matrix_of("conv", k)
    assert m.shape == (6, 12) and lowrank.max_rank("conv", k.shape) == 6
    for i, j, c, o in np.ndindex(*k.shape):
        assert m[i * 2 + c, j * 4 + o] == k[i, j, c, o]
    with pytest.raises(ValueError, match="conv_transpose"):
        lowrank.max_rank("conv_transpose", k.shape)


@pytest.mark.parametrize(
    "model, ranks",
    [
        (CNN, {"conv_0": 6, "conv_1": 9, "conv_2": 6, "dense_0": 3}),  # every layer, full
        (CNN, {"conv_1": 9}),  # only the strided one
        (MLP, {"dense_0": 5, "dense_1": 3}),
    ],
    ids=["cnn", "strided", "mlp"],
)
def test_full_rank_factorized_network_is_the_network(model, ranks):
    params, state = _variables(model, 10)
    shapes = _kernel_shapes(model, params)
    assert ranks == {n: lowrank.max_rank(model.spec.layer(n).kind, shapes[n]) for n in ranks}
    masks = spec_lib.full(model.spec)
    first = model.spec.names[0]
    masks[first] = masks[first].at[1].set(False)  # a masked unit stays masked
    x = _random(20, (2, *model.spec.input_shape), std=1.0)
    want = model.apply(params, masks, x, state=state)

    small = lowrank.factorize_params(model.spec, params, ranks)
    module = model.factorized(None, ranks)
    got = module.apply({"params": small, **state}, x, masks, train=False)
    np.testing.assert_allclose(got, want, atol=1e-5)
    for name in ranks:
        inner = f"{name}_v" if name.startswith("conv") else f"{name}_in"
        assert set(small[inner]) == {"kernel"}  # the first factor has no bias
        np.testing.assert_array_equal(small[name]["bias"], params[name]["bias"])
    # The factorized module's own init has exactly this tree structure and shapes.
    init = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, masks)["params"]
    assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, small)


def test_conv_factors_have_the_separable_shapes():
    k = np.asarray(_random(2, (3, 3, 2, 4)))
    a, b = lowrank.factor("conv", k, 2)
    assert a.shape == (3, 1, 2, 2) and b.shape == (1, 3, 2, 4)
    # The pair's composed kernel is `approximate`'s reconstruction.
    composed = np.einsum("icl,jlo->ijco", a[:, 0], b[0])
    np.testing.assert_allclose(composed, lowrank.approximate("conv", k, 2), atol=1e-5)
    with pytest.raises(ValueError, match=r"\[1, 6\]"):
        lowrank.factor("conv", k, 7)


def test_low_rank_factorized_network_computes_the_approximated_one():
    params, state = _variables(CNN, 30)
    ranks = {"conv_1": 2, "dense_0": 1}
    masks = spec_lib.full(CNN.spec)
    x = _random(31, (2, 8, 7, 2), std=1.0)
    want = CNN.apply(lowrank.approximate_params(CNN.spec, params, ranks), masks, x, state=state)
    small = lowrank.factorize_params(CNN.spec, params, ranks)
    got = CNN.factorized(None, ranks).apply({"params": small, **state}, x, masks)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_at_widths_carries_factorized():
    small = CNN.at_widths({"conv_0": 2, "conv_1": 3, "conv_2": 1, "dense_0": 3})
    module = small.factorized(None, {"conv_0": 1})
    x = jax.ShapeDtypeStruct((1, 8, 7, 2), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, spec_lib.full(small.spec))
    shapes = jax.tree.map(jnp.shape, shapes["params"])
    assert shapes["conv_0_v"] == {"kernel": (3, 1, 2, 1)}
    assert shapes["conv_0"]["kernel"] == (1, 3, 1, 2) and shapes["conv_2"]["kernel"][-1] == 1


# -------------------------------------------------------------------- reconstruction


def test_sobel_kernel_is_rank_one():
    k = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])[:, :, None, None].astype(np.float32)
    assert lowrank.max_rank("conv", k.shape) == 3
    np.testing.assert_allclose(lowrank.approximate("conv", k, 1), k, atol=1e-6)
    a, b = lowrank.factor("conv", k, 1)
    np.testing.assert_allclose(np.outer(a[:, 0, 0, 0], b[0, :, 0, 0]), k[:, :, 0, 0], atol=1e-6)
    assert np.allclose(lowrank.decompose("conv", k).s[1:], 0, atol=1e-6)


def test_approximate_zeroes_the_singular_values_beyond_the_rank():
    k = np.asarray(_random(3, (3, 3, 2, 4)), np.float64)
    m = k.transpose(0, 2, 1, 3).reshape(6, 12)
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    for r in range(1, 7):
        want = (u @ np.diag(np.where(np.arange(6) < r, s, 0)) @ vt).reshape(3, 2, 3, 4)
        got = lowrank.approximate("conv", k, r)
        np.testing.assert_allclose(got, want.transpose(0, 2, 1, 3), atol=1e-5)
    np.testing.assert_allclose(lowrank.approximate("conv", k, 6), k, atol=1e-5)


def test_reconstruct_with_a_traced_rank_compiles_once():
    k = np.asarray(_random(4, (3, 3, 2, 4)))
    svd = lowrank.decompose("conv", k)
    traces = []

    @jax.jit
    def rebuild(svd, rank):
        traces.append(rank)
        return lowrank.reconstruct("conv", svd, rank, k.shape)

    for r in range(1, 7):
        got = rebuild(svd, jnp.int32(r))
        np.testing.assert_allclose(got, lowrank.approximate("conv", k, r), atol=1e-5)
    assert len(traces) == 1
    w = np.asarray(_random(5, (6, 4)))
    dense = lowrank.reconstruct("dense", lowrank.decompose("dense", w), 2, w.shape)
    np.testing.assert_allclose(dense, lowrank.approximate("dense", w, 2), atol=1e-5)


# ---------------------------------------------------------------------------- costs


def _layer(kind):
    return spec_lib.Layer("x", kind, 1, (), (), True, 1, 1, 1)


@pytest.mark.parametrize(
    "kind, shape, want",
    [
        ("dense", (10, 10), 4),  # 10r + 10r < 100
        ("conv", (5, 5, 1, 5), 4),  # 5*1*r + 5*r*5 = 30r < 125
        ("conv", (5, 5, 5, 1), 4),  # 5*5*r + 5*r*1 = 30r < 125
        ("conv", (5, 5, 5, 5), 12),  # 50r < 625
        ("dense", (6, 4), 2),  # 10r < 24
        ("dense", (1, 3), 0),  # 4r < 3: never
    ],
)
def test_saving_rank_by_hand(kind, shape, want):
    got = lowrank.saving_rank(_layer(kind), shape)
    assert got == want

    def cost(r):
        if kind == "dense":
            return shape[0] * r + r * shape[1]
        kh, kw, cin, cout = shape
        return kh * cin * r + kw * r * cout

    assert cost(got + 1) >= math.prod(shape) and (got == 0 or cost(got) < math.prod(shape))
    assert got < lowrank.max_rank(kind, shape)


def test_factorizable_and_the_fcn_saving_ranks():
    params = jax.eval_shape(FCN.init, jax.random.PRNGKey(0))
    layers = lowrank.factorizable(FCN.spec)
    assert [layer.name for layer in layers] == ["conv_0", "conv_1", "conv_2"]
    shapes = _kernel_shapes(FCN, params)
    assert [lowrank.saving_rank(layer, shapes[layer.name]) for layer in layers] == [4, 12, 4]
    auto = models.sequential_model(("conv:2:3", "convT:1:3"), (4, 4, 1))
    assert [layer.name for layer in lowrank.factorizable(auto.spec)] == ["conv_0"]


def test_count_flops_matches_the_spec_and_hand_counts():
    # 12 x 12 = 144 positions; 5 x 5 kernels, 1 -> 5 -> 5 -> 1 channels, biases.
    by_hand = 144 * (2 * 25 * 1 * 5 + 5) + 144 * (2 * 25 * 5 * 5 + 5) + 144 * (2 * 25 * 5 + 1)
    assert by_hand == 253584
    assert lowrank.count_flops(FCN.module, (12, 12, 1)) == by_hand
    assert spec_lib.count_flops(FCN.spec) == by_hand
    masks = spec_lib.full(FCN.spec)
    factorized = FCN.factorized(None, {"conv_1": 2})
    # conv_1_v: 5 x 1, 5 -> 2, no bias; conv_1: 1 x 5, 2 -> 5, bias.
    conv_1 = 144 * (2 * 5 * 5 * 2) + 144 * (2 * 5 * 2 * 5 + 5)
    want = by_hand - 144 * (2 * 25 * 5 * 5 + 5) + conv_1
    assert want == 102384
    assert lowrank.count_flops(factorized, (12, 12, 1), masks) == want
    assert lowrank.count_flops(factorized, (12, 12, 1)) == want


def test_count_flops_of_a_strided_factorized_layer():
    model = models.sequential_model(("conv:3:3:s2", "dense:2"), (8, 7, 2))
    # Unfactorized: 4 x 4 outputs of 3 x 3 x 2 -> 3 with bias; dense 48 -> 2.
    dense = 2 * 48 * 2 + 2
    assert lowrank.count_flops(model.module, (8, 7, 2)) == 16 * (2 * 9 * 2 * 3 + 3) + dense
    assert spec_lib.count_flops(model.spec) == 16 * (2 * 9 * 2 * 3 + 3) + dense
    # The 3 x 1 convolution (strides (2, 1)) runs at 4 x 7 positions, the 1 x 3 at 4 x 4.
    want = 28 * (2 * 3 * 2 * 2) + 16 * (2 * 3 * 2 * 3 + 3) + dense
    assert lowrank.count_flops(model.factorized(None, {"conv_0": 2}), (8, 7, 2)) == want
    # Parameters of the factorized tree: the formula's kernels plus the biases.
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    params = jax.tree.map(lambda s: np.ones(s.shape, np.float32), params)
    small = lowrank.factorize_params(model.spec, params, {"conv_0": 2})
    assert spec_lib.count_params(small) == 2 * (3 * 2 + 3 * 3) + 3 + 48 * 2 + 2


# --------------------------------------------------------------------------- search


def _fake(tables, calls):
    """score(ranks) = the product over layers of tables[layer][rank] (1 if unranked)."""

    def score_of(ranks):
        calls.append(dict(ranks))
        return math.prod(tables[name](rank) for name, rank in ranks.items())

    return score_of


TABLES = {
    "a": lambda r: 0.95 if r >= 5 else 0.5,  # smallest passing rank 5, costs 5% of the score
    "b": lambda r: 0.92 if r >= 3 else 0.8,  # passes only against the last accepted 0.95
    "c": lambda r: 0.1,  # never passes, even at its saving rank
    "d": lambda r: 1.0,  # saving rank 0: never scored
    "e": lambda r: float("nan"),  # NaN fails
}
LAYERS = [("a", 8), ("b", 4), ("c", 3), ("d", 0), ("e", 2)]


def test_search_ranks_last_accepted():
    calls = []
    ranks, trials = lowrank.search_ranks(_fake(TABLES, calls), LAYERS, 1.0, 0.9)
    assert ranks == {"a": 5, "b": 3}
    assert [c for c in calls if "a" in c and len(c) == 1] == [{"a": r} for r in (8, 4, 6, 5)]
    assert [t["rank"] for t in trials if t["layer"] == "b"] == [4, 2, 3]
    assert calls[4:7] == [{"a": 5, "b": 4}, {"a": 5, "b": 2}, {"a": 5, "b": 3}]
    assert [t["rank"] for t in trials if t["layer"] == "c"] == [3]  # fails at once
    assert not any(t["layer"] == "d" for t in trials)
    assert [(t["rank"], t["accepted"]) for t in trials if t["layer"] == "e"] == [(2, False)]
    assert len(calls) == len(trials) == 4 + 3 + 1 + 1
    chosen = [(t["layer"], t["rank"]) for t in trials if t["chosen"]]
    assert chosen == [("a", 5), ("b", 3)]
    b3 = next(t for t in trials if t["layer"] == "b" and t["rank"] == 3)
    assert b3["score"] == pytest.approx(0.95 * 0.92) and b3["ratio"] == pytest.approx(0.92)
    assert all(t["accepted"] == (t["score"] >= 0.9 * 0.95) for t in trials if t["layer"] == "b")


def test_search_ranks_baseline_keeps_the_trained_reference():
    ranks, trials = lowrank.search_ranks(_fake(TABLES, []), LAYERS, 1.0, 0.9, rule="baseline")
    assert ranks == {"a": 5}  # b's 0.874 is above 0.9 * 0.95 but below 0.9 * 1.0
    assert [(t["rank"], t["accepted"]) for t in trials if t["layer"] == "b"] == [(4, False)]
    with pytest.raises(ValueError, match="last_accepted"):
        lowrank.search_ranks(_fake(TABLES, []), LAYERS, 1.0, 0.9, rule="best")


@pytest.mark.parametrize("top", [1, 2, 3, 7, 8, 9, 16, 31])
def test_search_ranks_finds_the_boundary_in_logarithmic_calls(top):
    for boundary in range(1, top + 2):  # top + 1: not even the saving rank passes
        calls = []
        tables = {"x": lambda r, b=boundary: 1.0 if r >= b else 0.0}
        ranks, _ = lowrank.search_ranks(_fake(tables, calls), [("x", top)], 1.0, 0.99)
        assert ranks == ({"x": boundary} if boundary <= top else {})
        assert len(calls) <= math.ceil(math.log2(top)) + 1


# ------------------------------------------------------------------ model unchanged


def test_no_ranks_is_the_unfactorized_module():
    layers = ("conv:4:3", "conv:3:3:s2", "conv:2:3:valid:bn", "dense:3")
    x = _random(40, (1, 8, 7, 2), std=1.0)
    masks = spec_lib.full(CNN.spec)
    params, state = _variables(CNN, 50)
    want = CNN.apply(params, masks, x, state=state)
    for ranks in (None, {}):
        module = sequential.Sequential(layers=layers, ranks=ranks)
        shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x, masks)
        assert jax.tree.map(jnp.shape, shapes) == jax.tree.map(
            jnp.shape, {"params": params, **state}
        )
        np.testing.assert_array_equal(module.apply({"params": params, **state}, x, masks), want)
    assert CNN.factorized(None, None) == CNN.module


def test_bad_ranks_are_refused():
    x = jnp.zeros((1, 4, 4, 1))
    auto = models.sequential_model(("conv:2:3", "convT:1:3"), (4, 4, 1))
    masks = spec_lib.full(auto.spec)
    for ranks, match in (({"convT_0": 1}, "transposed"), ({"conv_9": 1}, "conv_9")):
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(auto.factorized(None, ranks).init, jax.random.PRNGKey(0), x, masks)
    with pytest.raises(ValueError, match="conv_transpose"):
        lowrank.approximate_params(auto.spec, {}, {"convT_0": 1})


def test_own_model_has_no_physical_factorization():
    model = models.Model.create(
        lambda widths: sequential.Sequential(layers=("dense:2",)), (3,), ("dense_0",)
    )
    assert model.factorized is None and model.at_widths({"dense_0": 1}).factorized is None
