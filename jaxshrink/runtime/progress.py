"""Progress lines: the elapsed time, a value over runs, the time left."""

from __future__ import annotations

import time

import numpy as np

from jaxshrink.runtime import distributed


class Logger:
    """Progress lines with the elapsed time, flushed at once."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if distributed.is_primary():  # one job, one log: the other processes stay quiet
            print(f"[{time.perf_counter() - self.start:7.1f}s] {msg}", flush=True)


def spread(values: np.ndarray, fmt: str = ".4f") -> str:
    """'0.5' for one run; 'mean (min, max)' for several."""
    if values.size == 1:
        return format(float(values[0]), fmt)
    return (
        f"{format(float(values.mean()), fmt)} (min {format(float(values.min()), fmt)}, "
        f"max {format(float(values.max()), fmt)})"
    )


def eta(remaining: int, done: int, seconds: float) -> str:
    """The time left for `remaining` steps at the pace of `done` in `seconds` (evals
    and checkpoints included): '45s', '9m 05s', '2h 07m'."""
    left = round(remaining * seconds / max(done, 1))
    if left < 60:
        return f"{left}s"
    if left < 3600:
        return f"{left // 60}m {left % 60:02d}s"
    return f"{left // 3600}h {left % 3600 // 60:02d}m"
