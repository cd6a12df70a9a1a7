"""Low-rank factorization of a trained network's layers: fewer parameters and FLOPs.

A layer's kernel is written as a matrix and replaced by the product of two thinner
ones, found by the singular value decomposition (SVD).

**Dense.** A kernel ``W`` (N x M, inputs x outputs) is ``W = U S V^T`` with singular
values ``s_1 >= s_2 >= ...``. Keeping the first ``L`` gives the best rank-L
approximation (Eckart-Young), ``W ~ O P`` with ``O = U_L sqrt(S_L)`` (N x L) and
``P = sqrt(S_L) V_L^T`` (L x M): the singular values are split as square roots, so
both factors have comparable scales. The layer becomes a dense layer to L units
without bias, then one to M units with the old bias: ``x W + b ~ (x O) P + b``.

**Convolution.** A k x k kernel ``K`` (kh, kw, Cin, Cout) computes
``y[p, q, o] = sum_{i, j, c} x[p + i, q + j, c] K[i, j, c, o]`` (padding aside).
Reshaped as the matrix ``M[(i, c), (j, o)] = K[i, j, c, o]`` (kh*Cin x kw*Cout), a
rank-L factorization ``M ~ A B`` with ``A[(i, c), l]`` and ``B[l, (j, o)]`` gives
``y[p, q, o] ~ sum_{j, l} z[p, q + j, l] B[l, j, o]`` with
``z[p, q, l] = sum_{i, c} x[p + i, q, c] A[i, c, l]``: a kh x 1 convolution to L
channels (kernel (kh, 1, Cin, L), no bias) followed by a 1 x kw one to Cout channels
(kernel (1, kw, L, Cout), the old bias). At full rank it is exact. The separable
pair also handles padding and strides exactly: 'SAME' and 'VALID' padding are
computed per spatial dimension from that dimension's size, kernel extent and stride,
so the kh x 1 convolution with strides (s, 1) pads the height exactly as the k x k
one with strides (s, s) does and leaves the width alone (extent 1), and the 1 x kw
one with strides (1, s) pads the width exactly as the original and leaves the
height alone. The first convolution has no bias, so the zeros padded around its
output equal what it computes on the original's zero padding.

**Costs** (kernel parameters; biases are unchanged). Dense: ``N M`` becomes
``L (N + M)``; convolution: ``kh kw Cin Cout`` becomes ``L (kh Cin + kw Cout)``. A
factorization saves parameters only when ``L < N M / (N + M)`` (resp.
``kh kw Cin Cout / (kh Cin + kw Cout)``): `saving_rank`, always below the matrix's
full rank. FLOPs per example follow `spec.count_flops`'s convention, positions * (2 *
window * inputs * outputs + outputs if biased) per layer, summed over every physical
layer by `count_flops` (the kh x 1 convolution of a strided layer runs at every
column, so it costs ``ceil(H / s) W`` positions, not ``ceil(H / s) ceil(W / s)``).

**Choosing ranks.** `search_ranks` applies the unit search's accept rule
(`minimize`): a change is kept when ``score >= threshold * reference`` (higher is
better), the reference being the last accepted score ('last_accepted') or the trained
one ('baseline'). Layers are visited in network order; for each, the smallest rank in
``[1, saving_rank]`` that clears the rule is found by binary search, *assuming the
score does not fall when the rank rises* (more singular values, a closer kernel).
The saving rank is tried first; if even it fails, the layer stays unfactorized. If
the assumption is violated the chosen rank still cleared the rule (every chosen rank
was scored); only a smaller passing rank may be missed.

Scoring needs no physical factorization: `approximate_params` replaces kernels by
their rank-L reconstructions, which compute the same function as the factorized
pair. For a search, `decompose` each kernel once and `reconstruct` it under `jit` with
a traced rank (fixed shapes; singular values at index >= rank are zeroed), so the
scoring function compiles once. `factorize_params` then builds the params of the
physically factorized network (`models.Model.factorized`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxshrink.core import spec as spec_lib

KINDS = ("conv", "dense")  # the factorizable layer kinds (not 'conv_transpose')
RULES = ("last_accepted", "baseline")  # as `minimize.REFERENCES`
_SUFFIX = {"conv": "_v", "dense": "_in"}  # the first factor's sub-module name suffix


class Svd(NamedTuple):
    """A kernel matrix's thin SVD, ``M = u @ diag(s) @ vt`` (float32)."""

    u: jax.Array  # (rows, k)
    s: jax.Array  # (k,), descending
    vt: jax.Array  # (k, cols)


# ---------------------------------------------------------------------- kernel algebra


def _check_kind(kind: str, shape: Sequence[int]) -> None:
    if kind not in KINDS:
        raise ValueError(f"cannot factorize a {kind!r} layer; allowed: {KINDS}")
    ndim = 2 if kind == "dense" else 4
    if len(shape) != ndim:
        raise ValueError(f"a {kind} kernel must have {ndim} dimensions, not shape {tuple(shape)}")


def _matrix_shape(kind: str, kernel_shape: Sequence[int]) -> tuple[int, int]:
    _check_kind(kind, kernel_shape)
    if kind == "dense":
        return int(kernel_shape[0]), int(kernel_shape[1])
    kh, kw, cin, cout = (int(d) for d in kernel_shape)
    return kh * cin, kw * cout


def matrix_of(kind: str, kernel) -> np.ndarray:
    """The kernel as a matrix: a dense kernel itself; a conv kernel K (kh, kw, Cin,
    Cout) as ``M[(i, c), (j, o)] = K[i, j, c, o]``, shape (kh*Cin, kw*Cout)."""
    kernel = np.asarray(kernel)
    rows, cols = _matrix_shape(kind, kernel.shape)
    if kind == "dense":
        return kernel
    return kernel.transpose(0, 2, 1, 3).reshape(rows, cols)


def _kernel_of(kind: str, matrix, kernel_shape: Sequence[int]):
    """Inverse of `matrix_of` (numpy or jax arrays)."""
    if kind == "dense":
        return matrix
    kh, kw, cin, cout = kernel_shape
    return matrix.reshape(kh, cin, kw, cout).transpose(0, 2, 1, 3)


def max_rank(kind: str, kernel_shape: Sequence[int]) -> int:
    """The full rank of the kernel's matrix: the smaller of its two sizes."""
    return min(_matrix_shape(kind, kernel_shape))


def _svd64(kind: str, kernel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD of the kernel's matrix in float64 (exact factors of small kernels)."""
    return np.linalg.svd(matrix_of(kind, kernel).astype(np.float64), full_matrices=False)


def _check_rank(kind: str, shape: Sequence[int], rank: int) -> int:
    full = max_rank(kind, shape)
    if not 1 <= int(rank) <= full:
        raise ValueError(f"rank {rank} of a {kind} kernel {tuple(shape)}: must be in [1, {full}]")
    return int(rank)


def factor(kind: str, kernel, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The two factors of the rank-`rank` approximation (float32).

    Args:
      kind: 'dense' or 'conv'.
      kernel: the layer's kernel, (N, M) or (kh, kw, Cin, Cout).
      rank: L, in [1, `max_rank`].

    Returns:
      dense: ``(O (N, L), P (L, M))`` with ``O @ P ~ W``; conv: ``(A (kh, 1, Cin, L),
      B (1, kw, L, Cout))``, the kernels of the kh x 1 and 1 x kw convolutions. The
      singular values are split as square roots into both.
    """
    kernel = np.asarray(kernel)
    rank = _check_rank(kind, kernel.shape, rank)
    u, s, vt = _svd64(kind, kernel)
    root = np.sqrt(s[:rank])
    first = u[:, :rank] * root  # (rows, L)
    second = root[:, None] * vt[:rank]  # (L, cols)
    if kind == "conv":
        kh, kw, cin, cout = kernel.shape
        first = first.reshape(kh, cin, rank)[:, None]  # (kh, 1, Cin, L)
        second = second.reshape(rank, kw, cout).transpose(1, 0, 2)[None]  # (1, kw, L, Cout)
    return first.astype(np.float32), second.astype(np.float32)


def approximate(kind: str, kernel, rank: int) -> np.ndarray:
    """The rank-`rank` reconstruction in the kernel's own shape (float32): the kernel
    the factorized pair of `factor` computes."""
    kernel = np.asarray(kernel)
    rank = _check_rank(kind, kernel.shape, rank)
    u, s, vt = _svd64(kind, kernel)
    matrix = (u[:, :rank] * s[:rank]) @ vt[:rank]
    return _kernel_of(kind, matrix, kernel.shape).astype(np.float32)


def decompose(kind: str, kernel) -> Svd:
    """The kernel matrix's thin SVD (computed once, on the host), for `reconstruct`."""
    u, s, vt = _svd64(kind, kernel)
    return Svd(
        jnp.asarray(u, jnp.float32), jnp.asarray(s, jnp.float32), jnp.asarray(vt, jnp.float32)
    )


def reconstruct(kind: str, svd: Svd, rank, kernel_shape: Sequence[int]) -> jax.Array:
    """The rank-`rank` kernel from its `decompose`d SVD; jit-friendly.

    `rank` may be traced: the shapes do not depend on it (singular values at index
    >= rank are zeroed), so a jitted scoring function compiles once for every rank.
    Rank 0 gives a zero kernel; a rank >= `max_rank` the full one.
    """
    keep = jnp.arange(svd.s.shape[0]) < rank
    s = jnp.where(keep, svd.s, 0.0)
    matrix = jnp.matmul(svd.u * s, svd.vt, precision=jax.lax.Precision.HIGHEST)
    return _kernel_of(kind, matrix, tuple(kernel_shape))


# -------------------------------------------------------------------------- layers


def factorizable(model_spec: spec_lib.ModelSpec) -> list[spec_lib.Layer]:
    """The layers that can be factorized: convolutions and dense layers, in order
    (transposed convolutions are not)."""
    return [layer for layer in model_spec.layers if layer.kind in KINDS]


def saving_rank(layer: spec_lib.Layer, kernel_shape: Sequence[int]) -> int:
    """The largest rank whose factorized layer has fewer kernel parameters.

    Dense (N, M): ``N r + r M < N M``; conv (kh, kw, Cin, Cout): ``kh Cin r +
    kw r Cout < kh kw Cin Cout``. 0 when no rank saves (biases are not counted: the
    factorized layer keeps the old bias and adds none).
    """
    rows, cols = _matrix_shape(layer.kind, kernel_shape)
    cost = math.prod(int(d) for d in kernel_shape)
    per_rank = rows + cols  # dense: N + M; conv: kh*Cin + kw*Cout
    return max(0, min((cost - 1) // per_rank, rows, cols))


def _sibling(path: tuple[str, ...], suffix: str) -> tuple[str, ...]:
    """The path of the first factor's kernel beside a layer's kernel path."""
    *parents, module, leaf = path
    return (*parents, module + suffix, leaf)


def _ranked(model_spec: spec_lib.ModelSpec, ranks: Mapping[str, int]) -> list:
    layers = []
    for name, rank in ranks.items():
        layer = model_spec.layer(name)
        if layer.kind not in KINDS:
            raise ValueError(f"layer {name!r} is a {layer.kind}; factorizable: {KINDS}")
        layers.append((layer, int(rank)))
    return layers


def factorize_params(model_spec: spec_lib.ModelSpec, params: dict, ranks: Mapping[str, int]):
    """The params of the factorized network (`models.Model.factorized(widths, ranks)`).

    For each layer `name` of `ranks`, its kernel becomes the second factor and the
    first goes to the sibling sub-module: conv ``{name}_v/kernel`` (kh, 1, Cin, r) and
    ``{name}/kernel`` (1, kw, r, Cout); dense ``{name}_in/kernel`` (N, r) and
    ``{name}/kernel`` (r, M). Biases, batch norms and the other layers are unchanged
    (the state too: pass the old one).
    """
    out = dict(params)
    for layer, rank in _ranked(model_spec, ranks):
        path = layer.kernel.path
        first, second = factor(layer.kind, spec_lib.get(params, layer.kernel), rank)
        module = _sibling(path, _SUFFIX[layer.kind])[:-1]  # a new key beside the layer
        out = spec_lib.set_path(out, module, {"kernel": jnp.asarray(first)})
        out = spec_lib.set_path(out, path, jnp.asarray(second))
    return out


def approximate_params(model_spec: spec_lib.ModelSpec, params: dict, ranks: Mapping[str, int]):
    """`params` with each ranked layer's kernel replaced by its rank-r reconstruction
    (same shapes: run it with the unfactorized module)."""
    out = params
    for layer, rank in _ranked(model_spec, ranks):
        kernel = approximate(layer.kind, spec_lib.get(params, layer.kernel), rank)
        out = spec_lib.set_path(out, layer.kernel.path, jnp.asarray(kernel))
    return out


# ------------------------------------------------------------------------- counting


class _Ones(Mapping):
    """Masks of any layer name: a scalar True (broadcasts over any layer's units)."""

    def __getitem__(self, name):
        return jnp.ones((), bool)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def count_flops(module: nn.Module, input_shape: Sequence[int], masks: Mapping | None = None):
    """Forward FLOPs per example of a Flax module called as ``module(x, masks,
    train=False)``.

    Traces it once with `jax.eval_shape` (nothing is computed or allocated) and sums
    over every `nn.Conv`, `nn.ConvTranspose` and `nn.Dense` call ``positions * (2 *
    window * in_channels * out_channels + out_channels if it has a bias)``, the
    convention of `spec.count_flops`: positions are output pixels (input pixels for a
    transposed convolution; 1 for a dense layer on a vector), window the kernel's
    spatial taps. Every physical layer counts in full: masks only run the module (to
    count a masked network, build it at its kept widths).

    Args:
      module: the network, e.g. ``model.factorized(widths, ranks)``.
      input_shape: one example's shape, e.g. (12, 12, 1).
      masks: the module's masks; None: all-true for whatever layer it asks.
    """
    masks = _Ones() if masks is None else masks
    total = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        layer = context.module
        kinds = (nn.Conv, nn.ConvTranspose, nn.Dense)
        if context.method_name != "__call__" or not isinstance(layer, kinds):
            return out
        variables = layer.variables.get("params", {})
        kernel = variables["kernel"].shape
        window = math.prod(kernel[:-2])
        units = int(kernel[-1])
        pixels = args[0].shape[1:-1] if isinstance(layer, nn.ConvTranspose) else out.shape[1:-1]
        bias = units if "bias" in variables else 0
        total.append(math.prod(pixels) * (2 * window * int(kernel[-2]) * units + bias))
        return out

    def init(x):
        with nn.intercept_methods(record):
            return module.init(jax.random.PRNGKey(0), x, masks, train=False)

    jax.eval_shape(init, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    return int(sum(total))


# --------------------------------------------------------------------------- search


def search_ranks(
    score_of: Callable[[dict[str, int]], float],
    layers: Sequence[tuple[str, int]],
    reference: float,
    threshold: float,
    rule: str = "last_accepted",
) -> tuple[dict[str, int], list[dict]]:
    """The smallest rank per layer that keeps the score, layer by layer.

    Layers are visited in the given order; for each with a saving rank R >= 1, rank R
    is scored first (with the ranks already chosen): if it fails the rule the layer
    stays unfactorized. Otherwise the smallest passing rank in [1, R] is found by
    binary search, assuming the score does not fall when the rank rises (at most
    ``ceil(log2(R)) + 1`` evaluations per layer). A rank passes when its score is
    finite and ``score >= threshold * last``; `last` is `reference` at first and, with
    rule 'last_accepted', the chosen rank's score after each factorized layer
    ('baseline': always `reference`), as `minimize`'s accept rule.

    Args:
      score_of: ranks ``{name: rank}`` -> the network's score (higher is better).
      layers: ``(name, saving_rank)`` pairs in network order.
      reference: the unfactorized network's score.
      threshold: the fraction of the reference a score must reach, e.g. 0.95.
      rule: 'last_accepted' or 'baseline'.

    Returns:
      ``(ranks, trials)``: the chosen ranks (unfactorized layers absent) and one
      record per evaluation, ``{'layer', 'rank', 'score', 'ratio' (score / last),
      'accepted' (the score cleared the rule), 'chosen' (the layer's final rank)}``.

    Raises:
      ValueError: an unknown rule.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {RULES}")
    ranks: dict[str, int] = {}
    trials: list[dict] = []
    last = float(reference)

    def trial(name: str, rank: int) -> dict:
        score = float(score_of({**ranks, name: rank}))
        ok = math.isfinite(score) and score >= threshold * last
        ratio = score / last if last != 0 else float("nan")
        record = dict(layer=name, rank=rank, score=score, ratio=ratio, accepted=ok, chosen=False)
        trials.append(record)
        return record

    for name, top in layers:
        top = int(top)
        if top < 1:
            continue
        best = _smallest_passing(functools.partial(trial, name), top)
        if best is None:
            continue
        best["chosen"] = True
        ranks[name] = best["rank"]
        if rule == "last_accepted":
            last = best["score"]
    return ranks, trials


def _smallest_passing(trial: Callable[[int], dict], top: int) -> dict | None:
    """The trial record of the smallest rank in [1, `top`] that passes, by binary search
    (the score taken not to fall as the rank rises); None if `top` fails."""
    best = trial(top)
    if not best["accepted"]:
        return None
    lo, hi = 1, top  # `hi` passes; the smallest passing rank is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        record = trial(mid)
        if record["accepted"]:
            hi, best = mid, record
        else:
            lo = mid + 1
    return best
