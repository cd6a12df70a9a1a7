"""The check of the `deploy` section (`jaxshrink.deploy.stage`'s forms and timings).

`jaxshrink.config.validate.validate` calls it, after the model is built, for a run with
`deploy.enabled`; each problem is one `errors.ConfigError` line naming the field, its
value and what is allowed. Without onnx installed, `deploy.onnx` is refused here
(`onnx.require`), not after the run.
"""

from __future__ import annotations

from jaxshrink.core.checks import check_field, check_finite_positive, check_int, is_int
from jaxshrink.deploy import onnx as onnx_export


def check(c, model) -> None:
    """The `deploy` section of `c`, for `model` (the run's network, built for its data)."""
    d = c.deploy
    bits = tuple(d.bits)
    ok = len(bits) > 0 and all(is_int(b, 2) and b <= 8 for b in bits)
    check_field(ok, "deploy.bits", bits, "a non-empty list of integers from 2 to 8")
    qb = d.quant_bits
    check_field(is_int(qb, 0) and (qb == 0 or 2 <= qb <= 8), "deploy.quant_bits", qb, "0 or 2..8")
    if d.threshold is not None:
        check_field(0.0 < d.threshold <= 1.0, "deploy.threshold", d.threshold, "a ratio in (0, 1]")
    for field in ("deploy.finetune_steps", "deploy.threads"):
        check_int(c, field, 0)
    check_int(c, "deploy.repeats")
    check_finite_positive(d.budget_s, "deploy.budget_s")
    sizes = tuple(d.batch_sizes)
    ok = len(sizes) > 0 and all(is_int(b, 1) for b in sizes)
    check_field(ok, "deploy.batch_sizes", sizes, "a non-empty list of positive integers")
    shape = tuple(d.input_shape)
    if shape:
        own = tuple(model.spec.input_shape)
        # Only a chain without dense layers runs on images of another size (a plain
        # module's smaller program is written for its own example shape).
        convolutional = not model.wrapped and all(
            layer.kind != "dense" for layer in model.spec.layers
        )
        ok = all(is_int(v, 1) for v in shape) and (
            shape == own or (convolutional and len(shape) == len(own) == 3 and shape[-1] == own[-1])
        )
        allowed = f"() or {own}" + (" or (H, W, its channels)" if convolutional else "")
        check_field(ok, "deploy.input_shape", shape, allowed)
    if d.onnx:
        onnx_export.require()
    if d.onnx and model.wrapped:
        from jaxshrink.core import groups, shrink

        # The smaller program runs one example and is vmapped over the batch: a pooling
        # that tiles its input is written as a reshape and a reduction, any other
        # windowed reduction as a window with a fifth axis, which onnxruntime refuses.
        windows = sorted(
            {
                e.primitive.name
                for e in groups.equations(model.module, model.spec.input_shape)
                if e.primitive.name.startswith("reduce_window")
                and not shrink.tiles(e.params, e.invars[0].aval.shape)
            }
        )
        check_field(
            not windows,
            "deploy.onnx",
            True,
            f"False for a plain module with overlapping or padded windows "
            f"({', '.join(windows)}): its smaller program's pooling does not run in "
            "onnxruntime",
        )
