"""Selection strategies (thesis 2.4.3) and their stopping rules (4.3) on tiny hand-built nets.

Most nets here use kernel_size 1, so a unit of `conv_1` is just the column
``kernel[0, 0, :, j]`` plus its bias: the vector `spec.unit_vectors` builds is
``[w_in0, w_in1, w_in2, bias]`` and every expected cosine is hand arithmetic.
Candidates are flattened as conv_0/0..2 -> 0..2, conv_1/0..2 -> 3..5; the output
layer (conv_2, 1 unit) is never a candidate.
"""

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxshrink.config import schema as config_lib
from jaxshrink.config import validate
from jaxshrink.core import errors, models
from jaxshrink.core import masks as masks_lib
from jaxshrink.core import spec as spec_lib
from jaxshrink.experiments import runner, sweep
from jaxshrink.search import strategies

A = 1 / math.sqrt(2)  # cos 45 degrees
C = 1 / math.sqrt(1.01)  # cos between [1, 0, ...] and [1, 0.1, ...]


def _layer(rows):
    """A kernel_size-1 layer from one ``[w_in0, ..., w_in(C-1), bias]`` row per unit."""
    rows = np.asarray(rows, np.float32)
    units, c_in = rows.shape[0], rows.shape[1] - 1
    # kernel[0, 0, c, j] = rows[j][c]
    return {
        "kernel": jnp.asarray(rows[:, :-1].T.reshape(1, 1, c_in, units)),
        "bias": jnp.asarray(rows[:, -1]),
    }


@functools.cache
def _spec(n0=3, n1=3, k=1):
    """The spec of conv_0 (1 -> n0), conv_1 (n0 -> n1), conv_2 (-> 1), kernel k."""
    layers = [f"conv:{n0}:{k}", f"conv:{n1}:{k}", f"conv:1:{k}"]
    return models.sequential_model(layers, (4, 4, 1), final_activation=True).spec


SPEC = _spec()


def _spec_of(masks, params=None):
    """The spec of the nets here: sizes from the masks, the kernel size from params."""
    k = 1 if params is None else params["conv_1"]["kernel"].shape[0]
    return _spec(masks["conv_0"].shape[0], masks["conv_1"].shape[0], k)


def _net(rows0, rows1):
    """conv_0 (1 -> 3), conv_1 (3 -> len(rows1)), conv_2 (-> 1 unit), all kernel_size 1."""
    n1 = len(rows1)
    return {
        "conv_0": _layer(rows0),
        "conv_1": _layer(rows1),
        "conv_2": {"kernel": jnp.ones((1, 1, n1, 1)), "bias": jnp.zeros((1,))},
    }


def _masks(m0=(1, 1, 1), m1=(1, 1, 1)):
    return {
        "conv_0": jnp.asarray(m0, bool),
        "conv_1": jnp.asarray(m1, bool),
        "conv_2": jnp.ones((1,), bool),
    }


def _flat(*values):
    return jnp.asarray(values, bool)


# conv_0: u0 = [1, 0], u1 = [0, 1], u2 = [-1, -1]
#   cos(u0, u1) = 0, cos(u0, u2) = -1/sqrt(2), cos(u1, u2) = -1/sqrt(2)
#   signed max: u0 = 0, u1 = 0, u2 = -A          absolute max: A, A, A
CONV0 = [[1, 0], [0, 1], [-1, -1]]

# conv_1 "pair": v0 = e2 (orthogonal to both), v1 = e0, v2 = e0 + 0.1 e1
#   cos(v0, v1) = 0, cos(v0, v2) = 0, cos(v1, v2) = 1 / sqrt(1.01) = C ~ 0.995
PAIR = [[0, 0, 1, 0], [1, 0, 0, 0], [1, 0.1, 0, 0]]

# conv_1 "anti": v0 = e0 + e1, v1 = e0, v2 = -e0
#   cos(v0, v1) = A, cos(v0, v2) = -A, cos(v1, v2) = -1
#   signed max: v0 = A, v1 = A, v2 = -A           absolute max: v0 = A, v1 = 1, v2 = 1
ANTI = [[1, 1, 0, 0], [1, 0, 0, 0], [-1, 0, 0, 0]]

# conv_1 with 4 units: v0 = e0, v1 = e1, v2 = e0 + e1, v3 = e2
#   cos(v0, v2) = cos(v1, v2) = A, all other pairs 0
QUAD = [[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]]

KEY = jax.random.PRNGKey(0)


def _mcfg(**kw):
    c = config_lib.base_config("sobel").minimize
    c.update(kw)
    return c


def _net_of(spec, params, masks, key=None):
    """A `strategies.Net` of a bare spec (for scores that read only weights and masks)."""
    return strategies.Net(
        types.SimpleNamespace(spec=spec), None, params, {}, masks, key, None, None
    )


def _cosine_score(params, masks, how="max", absolute=False):
    cfg = _mcfg(aggregation=how, absolute=absolute)
    return strategies.cosine_score(_net_of(_spec_of(masks, params), params, masks), cfg)


def _stats(params, masks, how, absolute):
    return strategies.cosine_stats(_spec_of(masks, params), params, masks, how, absolute)


def _unit_vectors(params, masks, name):
    return spec_lib.unit_vectors(_spec_of(masks, params), params, masks, name)


def _eligible(masks):
    return masks_lib.eligible(_spec_of(masks), masks)


def _choose(params, masks, failed=None, **kw):
    scores = _cosine_score(params, masks, **kw)
    allowed = _eligible(masks)
    if failed is not None:
        allowed = allowed & ~failed
    choice, ok = strategies.select(scores, allowed)
    return int(choice), bool(ok)


# --------------------------------------------------------------------------- layout


def test_candidate_layout_and_flatten_roundtrip():
    spec = _spec(3, 4)
    assert masks_lib.candidate_layout(spec) == [("conv_0", 3), ("conv_1", 4)]
    assert masks_lib.num_candidates(spec) == 7
    assert [masks_lib.candidate_name(spec, i) for i in (0, 2, 3, 6)] == [
        "conv_0/0",
        "conv_0/2",
        "conv_1/0",
        "conv_1/3",
    ]
    vec = jnp.arange(7.0)
    tree = masks_lib.unflatten(spec, vec, fill=-1.0)
    np.testing.assert_array_equal(tree["conv_0"], [0, 1, 2])
    np.testing.assert_array_equal(tree["conv_1"], [3, 4, 5, 6])
    np.testing.assert_array_equal(tree["conv_2"], [-1.0])
    np.testing.assert_array_equal(masks_lib.flatten(spec, tree), vec)


def test_unit_vectors_layout_kernel2_and_zeroed_inputs():
    # conv_1 kernel (2, 2, 3, 3) with kernel[h, w, c, j] = 1000 j + 100 h + 10 w + c + 1.
    kernel = np.zeros((2, 2, 3, 3), np.float32)
    for h in range(2):
        for w in range(2):
            for c in range(3):
                for j in range(3):
                    kernel[h, w, c, j] = 1000 * j + 100 * h + 10 * w + c + 1
    bias = np.array([-1.0, -2.0, -3.0], np.float32)
    params = {
        "conv_0": {"kernel": jnp.ones((2, 2, 1, 3)), "bias": jnp.zeros((3,))},
        "conv_1": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)},
        "conv_2": {"kernel": jnp.ones((2, 2, 3, 1)), "bias": jnp.zeros((1,))},
    }
    for m0 in [(1, 1, 1), (1, 0, 1)]:
        got = np.asarray(_unit_vectors(params, _masks(m0=m0), "conv_1"))
        assert got.shape == (3, 2 * 2 * 3 + 1)
        for j in range(3):
            # row-major over (h, w, c), then the bias; channels of dead conv_0 units read 0.
            want = [
                kernel[h, w, c, j] * m0[c] for h in range(2) for w in range(2) for c in range(3)
            ]
            np.testing.assert_array_equal(got[j], want + [bias[j]])
    # The first layer has no previous layer: nothing is zeroed.
    got0 = np.asarray(_unit_vectors(params, _masks(m0=(1, 0, 1)), "conv_0"))
    np.testing.assert_array_equal(got0, np.concatenate([np.ones((3, 4)), np.zeros((3, 1))], 1))


def test_unit_vectors_of_a_dense_layer_are_kernel_columns_and_bias():
    spec = models.sequential_model(["dense:3", "dense:2"], (4,)).spec
    # dense_0: kernel[i, u] = 10 i + u + 1 (input i, unit u), bias[u] = -(u + 1)
    k0 = np.array([[10 * i + u + 1 for u in range(3)] for i in range(4)], np.float32)
    # dense_1: kernel[i, u] = 100 i + u + 1, bias [-1, -2]
    k1 = np.array([[100 * i + u + 1 for u in range(2)] for i in range(3)], np.float32)
    params = {
        "dense_0": {"kernel": jnp.asarray(k0), "bias": jnp.array([-1.0, -2.0, -3.0])},
        "dense_1": {"kernel": jnp.asarray(k1), "bias": jnp.array([-1.0, -2.0])},
    }
    masks = spec_lib.full(spec)
    got = np.asarray(spec_lib.unit_vectors(spec, params, masks, "dense_0"))
    # Row u is column u of the kernel, then bias u.
    np.testing.assert_array_equal(
        got, [[1, 11, 21, 31, -1], [2, 12, 22, 32, -2], [3, 13, 23, 33, -3]]
    )
    for u in range(3):
        np.testing.assert_array_equal(got[u], np.append(k0[:, u], params["dense_0"]["bias"][u]))
    np.testing.assert_array_equal(
        spec_lib.unit_vectors(spec, params, masks, "dense_1"),
        [[1, 101, 201, -1], [2, 102, 202, -2]],
    )
    # dense_0/1 disabled: dense_1 reads a constant zero from its input 1.
    masks["dense_0"] = jnp.array([True, False, True])
    np.testing.assert_array_equal(
        spec_lib.unit_vectors(spec, params, masks, "dense_1"), [[1, 0, 201, -1], [2, 0, 202, -2]]
    )
    # A unit's own mask does not change its vector (the first layer reads the input).
    np.testing.assert_array_equal(spec_lib.unit_vectors(spec, params, masks, "dense_0"), got)


# conv_0 (2 units, 1x1) on 4x4x1 -> max-pool 2 -> 2x2x2 -> flatten: dense input i reads
# conv unit i % 2. dense_0 (3 units, bias 0):
#   u0 = [1, 0, 1, 0, 1, 0, 1, 0]  reads conv unit 0 only
#   u1 = [1, 5, 1, 5, 1, 5, 1, 5]
#   u2 = [0, 1, 0, 1, 0, 1, 0, 1]  reads conv unit 1 only
# all alive: |u0| = 2, |u1| = sqrt(104), |u2| = 2; u0.u1 = 4, u1.u2 = 20, u0.u2 = 0
#   cos(u0, u1) = 4 / (2 sqrt 104) = 1/sqrt(26), cos(u1, u2) = 5/sqrt(26)
#   max: [1/sqrt26, 5/sqrt26, 5/sqrt26]
# conv unit 1 dead: inputs 1, 3, 5, 7 read zero -> u1 = u0, u2 = 0 -> max [1, 1, 0]
FLAT_DENSE = [[1, 1, 0], [0, 5, 1]] * 4


def test_dense_vectors_after_a_flatten_zero_every_copy_of_a_dead_conv_unit():
    spec = models.sequential_model(["conv:2:1", "maxpool:2", "dense:3", "dense:1"], (4, 4, 1)).spec
    kernel = np.asarray(FLAT_DENSE, np.float32)  # (8, 3): kernel[i, u]
    params = {
        "conv_0": {"kernel": jnp.ones((1, 1, 1, 2)), "bias": jnp.array([0.0, 1.0])},
        "dense_0": {"kernel": jnp.asarray(kernel), "bias": jnp.zeros((3,))},
        "dense_1": {"kernel": jnp.ones((3, 1)), "bias": jnp.zeros((1,))},
    }
    masks = spec_lib.full(spec)
    got = np.asarray(spec_lib.unit_vectors(spec, params, masks, "dense_0"))
    np.testing.assert_array_equal(got, np.concatenate([kernel.T, np.zeros((3, 1))], 1))
    stats = strategies.cosine_stats(spec, params, masks, "max", False)
    s26 = math.sqrt(26)
    np.testing.assert_allclose(stats["dense_0"], [1 / s26, 5 / s26, 5 / s26], atol=1e-6)

    masks["conv_0"] = jnp.array([True, False])
    got = np.asarray(spec_lib.unit_vectors(spec, params, masks, "dense_0"))
    want = kernel.T.copy()
    want[:, [1, 3, 5, 7]] = 0.0  # conv unit 1 of 2 feeds inputs 1, 1 + 2, 1 + 4, 1 + 6
    np.testing.assert_array_equal(got, np.concatenate([want, np.zeros((3, 1))], 1))
    stats = strategies.cosine_stats(spec, params, masks, "max", False)
    np.testing.assert_allclose(stats["dense_0"], [1, 1, 0], atol=1e-6)
    # The dead conv unit's own vector ([w, b] of a 1x1 filter) is unchanged.
    np.testing.assert_array_equal(
        spec_lib.unit_vectors(spec, params, masks, "conv_0"), [[1, 0], [1, 1]]
    )


def test_cosine_matrix_hand_values_and_zero_row():
    m = np.asarray(strategies.cosine_matrix(jnp.array([[3.0, 4.0], [4.0, 3.0], [0.0, 0.0]])))
    # |a| = |b| = 5, a.b = 12 + 12 = 24 -> 24 / 25; the all-zero row gives 0.
    np.testing.assert_allclose(m, [[1, 0.96, 0], [0.96, 1, 0], [0, 0, 0]], atol=1e-6)


# --------------------------------------------------------------------------- cosine


def test_cosine_max_picks_the_nearly_parallel_pair():
    params, masks = _net(CONV0, PAIR), _masks()
    stats = _stats(params, masks, "max", absolute=False)
    np.testing.assert_allclose(stats["conv_0"], [0, 0, -A], atol=1e-6)
    np.testing.assert_allclose(stats["conv_1"], [0, C, C], atol=1e-6)
    # flat scores [0, 0, -A, 0, C, C]: the max C is shared by conv_1/1 and conv_1/2 (the
    # pair has one similarity); ties go to the lower index -> 4 = conv_1/1.
    assert _choose(params, masks) == (4, True)


def test_nth_max_after_failures():
    params, masks = _net(CONV0, PAIR), _masks()
    # 1st: 4 (score C). Failed {4}: the 2nd max is its partner 5 (also C).
    assert _choose(params, masks, _flat(0, 0, 0, 0, 1, 0))[0] == 5
    # Failed {4, 5}: the rest are [0, 0, -A, 0]; the max 0 ties 0, 1, 3 -> 0.
    assert _choose(params, masks, _flat(0, 0, 0, 0, 1, 1))[0] == 0
    # Failed {4, 5, 0}: -> 1, then 3, then 2 (score -A) last.
    assert _choose(params, masks, _flat(1, 0, 0, 0, 1, 1))[0] == 1
    assert _choose(params, masks, _flat(1, 1, 0, 0, 1, 1))[0] == 3
    assert _choose(params, masks, _flat(1, 1, 0, 1, 1, 1))[0] == 2
    # Everything failed: no candidate.
    assert _choose(params, masks, _flat(1, 1, 1, 1, 1, 1))[1] is False


def test_signed_and_absolute_differ_on_an_anti_parallel_pair():
    params, masks = _net(CONV0, ANTI), _masks()
    signed = _stats(params, masks, "max", absolute=False)
    absolute = _stats(params, masks, "max", absolute=True)
    np.testing.assert_allclose(signed["conv_1"], [A, A, -A], atol=1e-6)
    np.testing.assert_allclose(absolute["conv_1"], [A, 1, 1], atol=1e-6)
    np.testing.assert_allclose(absolute["conv_0"], [A, A, A], atol=1e-6)
    # signed: flat [0, 0, -A, A, A, -A] -> 3 (tie 3/4 -> lower);
    # absolute: flat [A, A, A, A, 1, 1] -> 4 (the anti-parallel v1, v2; tie -> lower).
    assert _choose(params, masks, absolute=False)[0] == 3
    assert _choose(params, masks, absolute=True)[0] == 4


def test_aggregations_hand_values_four_units():
    # conv_1 = QUAD; per unit, its similarities to the 3 others:
    #   v0: [0, A, 0]  v1: [0, A, 0]  v2: [A, A, 0]  v3: [0, 0, 0]
    # mean:   A/3, A/3, 2A/3, 0
    # min:    0, 0, 0, 0
    # median: 0, 0, A, 0
    # std (population): [0, A, 0] -> mean A/3, var ((A/3)^2 * 2 + (2A/3)^2) / 3 = 2A^2/9
    #   = 1/9 -> 1/3; [A, A, 0] -> same deviations mirrored -> 1/3; [0, 0, 0] -> 0.
    params, masks = _net(CONV0, QUAD), _masks(m1=(1, 1, 1, 1))
    want = {
        "max": [A, A, A, 0],
        "mean": [A / 3, A / 3, 2 * A / 3, 0],
        "min": [0, 0, 0, 0],
        "median": [0, 0, A, 0],
        "std": [1 / 3, 1 / 3, 1 / 3, 0],
    }
    for how, values in want.items():
        got = _stats(params, masks, how, absolute=False)["conv_1"]
        np.testing.assert_allclose(got, values, atol=1e-6, err_msg=how)
    # conv_0 (CONV0): others of u0: [0, -A], u1: [0, -A], u2: [-A, -A]
    np.testing.assert_allclose(
        _stats(params, masks, "mean", False)["conv_0"], [-A / 2] * 2 + [-A], 1e-6
    )
    np.testing.assert_allclose(
        _stats(params, masks, "std", False)["conv_0"], [A / 2, A / 2, 0], 1e-6
    )
    # mean / median pick conv_1/2 (flat index 5); max ties v0 v1 v2 of conv_1 -> 3.
    assert _choose(params, masks, how="mean")[0] == 5
    assert _choose(params, masks, how="median")[0] == 5
    assert _choose(params, masks, how="max")[0] == 3


def _numpy_stats(params, masks, how, absolute):
    """The per-unit statistics, recomputed with plain numpy loops."""
    names = ["conv_0", "conv_1"]
    out = {}
    for li, name in enumerate(names):
        kernel = np.array(params[name]["kernel"], np.float64)
        bias = np.array(params[name]["bias"], np.float64)
        alive = np.asarray(masks[name])
        if li > 0:
            prev = np.asarray(masks[names[li - 1]])
            kernel[:, :, ~prev, :] = 0.0
        units = kernel.shape[-1]
        vecs = [np.append(kernel[..., j].ravel(), bias[j]) for j in range(units)]
        stats = []
        for i in range(units):
            others = []
            for j in range(units):
                if i == j or not alive[i] or not alive[j]:
                    continue
                ni, nj = np.linalg.norm(vecs[i]), np.linalg.norm(vecs[j])
                cos = vecs[i] @ vecs[j] / (ni * nj) if ni > 0 and nj > 0 else 0.0
                others.append(abs(cos) if absolute else cos)
            if not others:
                stats.append(-np.inf)
            else:
                stats.append(
                    {
                        "max": np.max,
                        "mean": np.mean,
                        "min": np.min,
                        "std": np.std,
                        "median": np.median,
                    }[how](others)
                )
        out[name] = np.array(stats)
    return out


@pytest.mark.parametrize("absolute", [False, True])
def test_cosine_stats_match_numpy(absolute):
    # A random kernel_size-2 net with 5 units per hidden layer and dead units.
    # (numpy: each new shape of a jax.random call costs seconds to compile on a CPU)
    rng = np.random.default_rng(3)
    shapes = {"conv_0": (2, 2, 1, 5), "conv_1": (2, 2, 5, 5), "conv_2": (2, 2, 5, 1)}
    params = {
        name: {
            "kernel": jnp.asarray(rng.normal(size=shape), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=shape[-1:]), jnp.float32),
        }
        for name, shape in shapes.items()
    }
    for m0, m1 in [
        ((1,) * 5, (1,) * 5),
        ((1, 0, 1, 1, 0), (0, 1, 1, 1, 1)),
        ((1,) * 5, (0, 0, 1, 0, 1)),
    ]:
        masks = _masks(m0, m1)
        for how in strategies.AGGREGATIONS:
            got = _stats(params, masks, how, absolute)
            want = _numpy_stats(params, masks, how, absolute)
            for name in want:
                np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=how)


def test_dead_units_are_excluded_from_their_layers_aggregation():
    # QUAD with v2 dead: v0's live others are v1, v3 -> [0, 0]; v2 itself gets -inf.
    params, masks = _net(CONV0, QUAD), _masks(m1=(1, 1, 0, 1))
    for how in ("max", "mean", "median", "min", "std"):
        got = np.asarray(_stats(params, masks, how, absolute=False)["conv_1"])
        np.testing.assert_allclose(got, [0, 0, -np.inf, 0], atol=1e-6, err_msg=how)
    # conv_0/2 dead: u0, u1 only see each other (cos 0); u2 -> -inf.
    got = _stats(params, _masks((1, 1, 0), (1, 1, 1, 1)), "max", False)
    np.testing.assert_allclose(got["conv_0"], [0, 0, -np.inf], atol=1e-6)


def test_dead_units_of_previous_layer_are_ignored():
    # conv_0: u0 = [1, 0], u1 = [0, 1], u2 = [1, 0.1]
    #   cos(u0, u2) = C, cos(u1, u2) = 0.1 C, cos(u0, u1) = 0 -> max [C, 0.1 C, C]
    # conv_1: v0 = [1, 0, 5, 0], v1 = [1, 0, 0, 0], v2 = [0, 1, 0, 0]
    #   all alive: cos(v0, v1) = 1 / sqrt(26), others 0 -> max [1/sqrt26, 1/sqrt26, 0]
    #   conv_0/2 dead: input channel 2 is zeroed, v0 = [1, 0, 0, 0] = v1 -> max [1, 1, 0]
    params = _net([[1, 0], [0, 1], [1, 0.1]], [[1, 0, 5, 0], [1, 0, 0, 0], [0, 1, 0, 0]])
    alive = _masks()
    stats = _stats(params, alive, "max", False)
    np.testing.assert_allclose(stats["conv_0"], [C, 0.1 * C, C], atol=1e-6)
    np.testing.assert_allclose(stats["conv_1"], [1 / math.sqrt(26), 1 / math.sqrt(26), 0], 1e-6)
    assert _choose(params, alive)[0] == 0  # C beats 1/sqrt(26); tie 0/2 -> 0

    dead = _masks(m0=(1, 1, 0))
    np.testing.assert_array_equal(
        _unit_vectors(params, dead, "conv_1"),
        [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]],
    )
    stats = _stats(params, dead, "max", False)
    np.testing.assert_allclose(stats["conv_0"], [0, 0, -np.inf], atol=1e-6)
    np.testing.assert_allclose(stats["conv_1"], [1, 1, 0], atol=1e-6)
    assert _choose(params, dead)[0] == 3  # conv_1/0, now identical to conv_1/1


# --------------------------------------------------------------------------- eligible


def test_eligible():
    # All alive: all 6 candidates; the output layer is not among them.
    np.testing.assert_array_equal(_eligible(_masks()), [1, 1, 1, 1, 1, 1])
    # Dead units are not eligible.
    np.testing.assert_array_equal(_eligible(_masks((1, 0, 1), (0, 1, 1))), [1, 0, 1, 0, 1, 1])
    # A layer with one live unit has no eligible unit (its last unit is never proposed).
    np.testing.assert_array_equal(_eligible(_masks((0, 1, 0), (1, 1, 0))), [0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(_eligible(_masks((1, 1, 1), (0, 0, 1))), [1, 1, 1, 0, 0, 0])
    # The output layer (one unit) is never a candidate, whatever its size.
    masks = {"conv_0": jnp.ones(3, bool), "conv_1": jnp.ones(3, bool), "conv_2": jnp.ones(4, bool)}
    assert _eligible(masks).shape == (6,)


def test_select_returns_no_candidate_when_none_allowed():
    _, ok = strategies.select(jnp.arange(6.0), jnp.zeros(6, bool))
    assert not bool(ok)
    choice, ok = strategies.select(jnp.array([5.0, 1, 9, 2]), _flat(1, 1, 0, 1))
    assert (int(choice), bool(ok)) == (0, True)  # 9 is not allowed


# --------------------------------------------------------------------------- random, sequential


def test_random_picks_only_and_all_allowed_units():
    params = _net(CONV0, PAIR)
    masks = _masks((1, 1, 0), (1, 0, 1))  # eligible: 0, 1, 3, 5
    allowed = _eligible(masks) & ~_flat(0, 0, 0, 1, 0, 0)  # 3 failed -> {0, 1, 5}

    def pick(key):
        return strategies.select(
            strategies.random_score(_net_of(SPEC, params, masks, key), _mcfg()), allowed
        )[0]

    picks = np.asarray(jax.jit(jax.vmap(pick))(jax.random.split(KEY, 300)))
    counts = np.bincount(picks, minlength=6)
    assert set(np.nonzero(counts)[0]) == {0, 1, 5}
    assert counts.min(where=np.array([1, 1, 0, 0, 0, 1], bool), initial=300) > 50  # ~100 each


def test_sequential_visits_in_network_order():
    params, masks = _net(CONV0, PAIR), _masks()
    visited = jnp.zeros(6, bool)
    order = []
    while True:
        scores = strategies.sequential_score(_net_of(SPEC, params, masks, KEY), _mcfg())
        choice, ok = strategies.select(scores, _eligible(masks) & ~visited)
        if not ok:
            break
        order.append(int(choice))
        visited = visited.at[choice].set(True)
    assert order == [0, 1, 2, 3, 4, 5]


def test_sequential_skips_units_that_become_ineligible():
    # Every proposal is accepted (the unit is disabled): after 0 and 1, conv_0/2 is the
    # last live unit of its layer and is skipped; likewise conv_1/2 after 3 and 4.
    params = _net(CONV0, PAIR)
    m = np.ones(6, bool)
    visited = jnp.zeros(6, bool)
    order = []
    while True:
        masks = _masks(m[:3], m[3:])
        scores = strategies.sequential_score(_net_of(SPEC, params, masks, KEY), _mcfg())
        choice, ok = strategies.select(scores, _eligible(masks) & ~visited)
        if not ok:
            break
        order.append(int(choice))
        visited = visited.at[choice].set(True)
        m[int(choice)] = False
    assert order == [0, 1, 3, 4]


# ------------------------------------------------------------------ registry and rules


def test_registry_order_and_index():
    assert list(strategies.STRATEGIES)[:3] == ["cosine", "random", "sequential"]
    assert [strategies.index(n) for n in ("cosine", "random", "sequential")] == [0, 1, 2]
    assert strategies.STRATEGIES["cosine"].score is strategies.cosine_score
    assert strategies.STRATEGIES["random"].score is strategies.random_score
    assert strategies.STRATEGIES["sequential"].score is strategies.sequential_score


def test_thesis_stopping_rules():
    assert strategies.stopping_rule(_mcfg()) == (0, 2, False)  # default: cosine
    assert strategies.stopping_rule(_mcfg(strategy="random")) == (10, 0, False)
    assert strategies.stopping_rule(_mcfg(strategy="sequential")) == (0, 0, True)
    # `name` overrides the config's strategy (a sweep runs several).
    assert strategies.stopping_rule(_mcfg(), "random") == (10, 0, False)
    assert strategies.stopping_rule(_mcfg(strategy="random"), "sequential") == (0, 0, True)
    for name, rule in strategies.STRATEGIES.items():
        assert strategies.stopping_rule(_mcfg(strategy=name)) == (
            rule.max_rounds,
            rule.max_failures,
            rule.visit_once,
        )


def test_stopping_rule_overrides():
    assert strategies.stopping_rule(_mcfg(max_rounds=5, max_failures=-1))[:2] == (5, 2)
    assert strategies.stopping_rule(_mcfg(max_rounds=-1, max_failures=0))[:2] == (0, 0)
    assert strategies.stopping_rule(_mcfg(strategy="random", max_rounds=3, max_failures=4)) == (
        3,
        4,
        False,
    )
    assert strategies.stopping_rule(_mcfg(strategy="random", max_rounds=-1, max_failures=-1))[
        :2
    ] == (10, 0)
    assert strategies.stopping_rule(_mcfg(strategy="sequential", max_rounds=7)) == (7, 0, True)


def _scorer(**kw):
    """`score(params, masks, key)` of the strategy `kw` configures (default cosine)."""
    cfg = _mcfg(**kw)
    # Only the thesis's three are compiled (the others need a real model and batch);
    # `kind` stays the position in the whole registry.
    names = ("sequential", "cosine", "random")
    score = strategies.make_scorer(types.SimpleNamespace(spec=SPEC), None, cfg, names)
    return lambda p, m, k: score(strategies.index(cfg.strategy), p, {}, m, k, None, None)


def test_scorer_follows_config():
    params, masks = _net(CONV0, ANTI), _masks()
    allowed = _eligible(masks)
    for absolute, want in [(False, 3), (True, 4)]:
        score = _scorer(absolute=absolute)
        assert int(strategies.select(score(params, masks, KEY), allowed)[0]) == want
    np.testing.assert_allclose(
        _scorer(aggregation="min")(params, masks, KEY),
        _cosine_score(params, masks, how="min", absolute=False),
    )
    seq = _scorer(strategy="sequential")(params, masks, KEY)
    np.testing.assert_array_equal(seq, [0, -1, -2, -3, -4, -5])
    scores = np.asarray(_scorer(strategy="random")(params, masks, KEY))
    assert scores.shape == (6,) and np.all((scores >= 0) & (scores < 1))
    np.testing.assert_array_equal(
        scores, strategies.random_score(_net_of(SPEC, params, masks, KEY), _mcfg(strategy="random"))
    )


def _config(**minimize):
    c = config_lib.base_config("sobel")
    c.minimize.update(minimize)
    return c


def test_unknown_names_raise():
    validate.validate(_config())  # the defaults pass
    with pytest.raises(errors.ConfigError, match="minimize.strategy") as err:
        validate.validate(_config(strategy="greedy"))
    for name in ("cosine", "random", "sequential", "greedy"):
        assert name in str(err.value)
    with pytest.raises(errors.ConfigError, match="minimize.aggregation") as err:
        validate.validate(_config(aggregation="mode"))
    for name in ("max", "mean", "min", "std", "median", "mode"):
        assert name in str(err.value)
    c = sweep.add_section(_config())
    c.sweep.strategies = ("cosine", "greedy")
    with pytest.raises(errors.ConfigError, match="sweep.strategies") as err:
        runner.check(c)
    assert "greedy" in str(err.value)
    with pytest.raises(ValueError, match="aggregation 'sum'") as err:
        strategies.aggregate(jnp.zeros((2, 2)), jnp.ones((2, 2), bool), "sum")
    for name in strategies.AGGREGATIONS:
        assert name in str(err.value)


# --------------------------------------------------------------------------- jit


def test_jit_gives_the_same_choice():
    params = _net(CONV0, QUAD)
    cases = [
        (_masks(m1=(1, 1, 1, 1)), _flat(0, 0, 0, 0, 0, 0, 0)),
        (_masks((1, 0, 1), (1, 1, 0, 1)), _flat(0, 0, 0, 1, 0, 0, 0)),
        (_masks((1, 1, 1), (1, 1, 1, 1)), _flat(0, 0, 0, 0, 0, 1, 0)),
    ]
    spec = _spec(3, 4)
    configs = [
        _mcfg(aggregation=how, absolute=a) for how in strategies.AGGREGATIONS for a in (False, True)
    ]
    configs += [_mcfg(strategy="random"), _mcfg(strategy="sequential")]
    for cfg in configs:
        score = strategies.STRATEGIES[cfg.strategy].score

        def choose(p, m, failed, key, score=score, cfg=cfg):
            scores = score(_net_of(spec, p, m, key), cfg)
            return scores, *strategies.select(scores, masks_lib.eligible(spec, m) & ~failed)

        jitted = jax.jit(choose)
        for masks, failed in cases:
            s_eager, c_eager, ok_eager = choose(params, masks, failed, KEY)
            s_jit, c_jit, ok_jit = jitted(params, masks, failed, KEY)
            np.testing.assert_allclose(s_jit, s_eager, atol=1e-6)
            assert (int(c_jit), bool(ok_jit)) == (int(c_eager), bool(ok_eager)), cfg
