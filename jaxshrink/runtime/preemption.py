"""Stopping cleanly when asked: SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C).

Shared clusters end long jobs with SIGTERM and, a grace period later, SIGKILL. While
`watch()` is active a first SIGTERM or SIGINT only raises a flag. The stages look at it
at their safe points, the end of every chunk of training steps (`train.log_every`
steps, inside minimization rounds too), where they write a consistent checkpoint and
raise `Stopped`; the command line prints its one line and exits with `EXIT_CODE`.
Rerunning the same command resumes from that checkpoint to the result an
uninterrupted run gives.

If no safe point comes within `train.grace_seconds` of the signal, the process stops
at once with `EXPIRED_CODE` and the previous checkpoint stands (nothing is half
written: orbax renames a checkpoint into place when it is complete). A second signal
stops it at once too. In a job of several processes every safe point asks all of them
(`agreed`), so a signal to any process stops them all at the same point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

from jaxshrink.runtime import distributed

EXIT_CODE = 75  # stopped on request, checkpoint written: rerun to resume (EX_TEMPFAIL)
EXPIRED_CODE = 76  # stopped on request without a new checkpoint: the previous one stands
SIGNALS = (signal.SIGTERM, signal.SIGINT)

_state: dict = {"signal": None, "since": None, "grace": 30.0, "timer": None}


class Stopped(Exception):
    """The run stopped on request at a safe point, its checkpoint written."""


def requested() -> bool:
    """True once this process received SIGTERM or SIGINT under `watch`."""
    return _state["signal"] is not None


def agreed() -> bool:
    """True when any process of the job was asked to stop (a gather across processes,
    which every process must call at the same point; one process reads its own flag)."""
    return not distributed.all_agree(not requested())


def stop(where: str, save=None) -> None:
    """At a safe point: if any process was asked to stop, `save()` the checkpoint and
    raise `Stopped`; otherwise return."""
    if not agreed():
        return
    t0 = time.perf_counter()
    if save is not None:
        save()
    _cancel_timer()
    name = signal.Signals(_state["signal"]).name if requested() else "another process's signal"
    waited = time.perf_counter() - (_state["since"] or t0)
    raise Stopped(
        f"stopped by {name} {where}, {waited:.1f} s after the signal (checkpoint written in "
        f"{time.perf_counter() - t0:.1f} s); rerun the same command to resume"
    )


def _expire() -> None:
    name = signal.Signals(_state["signal"]).name
    print(
        f"jaxshrink: {name}: no safe point within the grace period of {_state['grace']:g} s "
        "(train.grace_seconds); stopped without a new checkpoint, the previous one stands",
        file=sys.stderr,
        flush=True,
    )
    os._exit(EXPIRED_CODE)


def _cancel_timer() -> None:
    timer = _state["timer"]
    if timer is not None:
        timer.cancel()
        _state["timer"] = None


def _handle(signum, frame) -> None:
    if _state["signal"] is not None:  # a second signal: at once
        _expire()
    _state["signal"], _state["since"] = signum, time.perf_counter()
    print(
        f"jaxshrink: {signal.Signals(signum).name}: stopping at the next safe point (within "
        f"{_state['grace']:g} s), with a checkpoint",
        file=sys.stderr,
        flush=True,
    )
    timer = threading.Timer(_state["grace"], _expire)
    timer.daemon = True
    timer.start()
    _state["timer"] = timer


@contextlib.contextmanager
def watch(grace_seconds: float = 30.0):
    """SIGTERM and SIGINT ask for a stop at the next safe point while inside. Outside
    the main thread (where Python cannot take signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    _state.update(signal=None, since=None, grace=float(grace_seconds), timer=None)
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        _cancel_timer()
        for s, handler in old.items():
            signal.signal(s, handler)
        _state.update(signal=None, since=None)
