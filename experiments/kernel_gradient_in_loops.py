"""Why `model.conv='taps'` exists, and what remains: XLA's CPU convolutions inside a
compiled loop.

    python experiments/kernel_gradient_in_loops.py [--out=experiments/results/...json]

Times a convolution's kernel gradient three ways, per call: XLA's own outside a loop,
XLA's own inside `lax.fori_loop` (where every jaxshrink training step runs), and
`jaxshrink.core.convs`'s per-tap matrix products inside the loop; for MNIST's 32 -> 64 5x5
layer at batch 50 and the FCN's 5 -> 5 layer at 64x64, batch 3.

Then the whole training step of the thesis FCN (one run, batch 3) at 64x64 and
128x128, per step: the engine's compiled loop (`Engine.train`, 20 steps in one
`fori_loop`) against a Python loop calling one jitted step 20 times, for each
`model.conv`. Prints tables and writes JSON with the device, date and command.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxshrink.core import convs, files

LAYERS = {"mnist 32->64 5x5, batch 50": ((50, 14, 14, 32), (5, 5, 32, 64)),
          "fcn 5->5 5x5 64x64, batch 3": ((3, 64, 64, 5), (5, 5, 5, 5))}  # fmt: skip
NHWC = ("NHWC", "HWIO", "NHWC")


def _ms(fn, arg, calls: int) -> float:
    jax.block_until_ready(fn(arg))
    start = time.perf_counter()
    for _ in range(3):
        jax.block_until_ready(fn(arg))
    return (time.perf_counter() - start) / 3 / calls * 1e3


def measure(x_shape, k_shape) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=k_shape), jnp.float32)
    out = {}
    for name, conv in (("xla", lax.conv_general_dilated), ("taps", convs.conv_general_dilated)):

        def kernel_grad(k, conv=conv):
            def loss(k):
                y = conv(x, k, (1, 1), "SAME", dimension_numbers=NHWC, precision="highest")
                return jnp.sum(y * y)

            return k - 1e-9 * jax.grad(loss)(k)

        out[f"{name}_outside_ms"] = _ms(jax.jit(kernel_grad), k, 1)
        loop = jax.jit(lambda k, f=kernel_grad: lax.fori_loop(0, 10, lambda i, v: f(v), k))
        out[f"{name}_in_loop_ms"] = _ms(loop, k, 10)
    return out


def whole_step(size: int, conv: str, steps: int = 20) -> dict:
    """ms per training step of the FCN: in the engine's loop, and one jitted step."""
    from jaxshrink.bench import speed as bench
    from jaxshrink.core import train
    from jaxshrink.search import batching

    config = bench._config(size, "highest", "loop", "sum", conv=conv)
    trainer = bench.make_trainer(config)
    engine = batching.make_engine(trainer, config.batch)
    data = bench._train_data(config, trainer, 64)
    states = bench._fresh_states(trainer, 1)
    num_steps = jnp.full((1,), steps, jnp.int32)
    in_loop = jax.jit(engine.train)
    looped = _ms(lambda s: in_loop(s, data, num_steps), states, steps)

    @jax.jit
    def one(state):
        return train.step(trainer, state, data)[0]

    def host_loop(state):
        for _ in range(steps):
            state = one(state)
        return state

    alone = _ms(host_loop, batching.take(states, 0), steps)
    return {"size": size, "conv": conv, "in_loop_ms": looped, "jitted_step_ms": alone}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="kernel_gradient_in_loops.json")
    args = parser.parse_args(argv)
    rows = {name: measure(*shapes) for name, shapes in LAYERS.items()}
    print(f"{'layer':<30} {'xla':>8} {'xla in loop':>12} {'taps in loop':>13}  (ms per call)")
    for name, r in rows.items():
        print(f"{name:<30} {r['xla_outside_ms']:>8.2f} {r['xla_in_loop_ms']:>12.2f} "
              f"{r['taps_in_loop_ms']:>13.2f}")  # fmt: skip
    steps = [whole_step(size, conv) for size in (64, 128) for conv in ("xla", "taps")]
    print(f"\n{'FCN step':<12} {'conv':>5} {'in fori_loop':>13} {'jitted step':>12}  (ms per step)")
    for r in steps:
        print(f"{r['size']:>4}x{r['size']:<7} {r['conv']:>5} {r['in_loop_ms']:>13.2f} "
              f"{r['jitted_step_ms']:>12.2f}")  # fmt: skip
    report = {
        **files.provenance("python experiments/kernel_gradient_in_loops.py", argv),
        "rows": rows,
        "whole_step": steps,
    }
    files.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
