"""Does a disabled unit relearn its past values? Thesis 001, 2.4.1, measured.

    python -m jaxshrink.main --config=configs/relearn.py           # 10 networks, 2000 steps
    python -m jaxshrink.main --config=configs/relearn.py:quick     # ~4 min, CPU

Default: Canny on 256x256 crops; 10 networks trained 10000 steps, then each of the 10
hidden units disabled in each of the three modes (one disabled; one disabled, others
frozen; one disabled and frozen) with zero and with re-drawn values, and trained one
round (2000 steps). `quick`: 2 networks on 32x32 crops, 600 + 200 steps. The workdir
gets `relearn.csv`, `relearn_table.md`, `relearn.png` and `results.json`; see
`jaxshrink/experiments/relearn.py` for how each number is defined.
"""

from jaxshrink.experiments import relearn


def get_config(arg: str | None = None):
    return relearn.get_preset("canny", arg)
