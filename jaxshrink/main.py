"""Command line: flags, then one call into the library.

    python -m jaxshrink.main --config=configs/sobel.py[:quick] [--workdir=DIR]
        [--config.train.initial_steps=500 ...]
    python -m jaxshrink.main --config=configs/sweep.py[:quick]    # Figure 4.2
    python -m jaxshrink.main --config=configs/correlation.py[:quick]    # Table 4.1, Fig 4.1
    python -m jaxshrink.main --config=configs/relearn.py[:quick]    # thesis 2.4.1's modes
    python -m jaxshrink.main --config=configs/depth.py[:quick]    # depth and growth

Without `--workdir` the run goes to `runs/<config name>[-<preset>]` under the current
folder, so rerunning the same command resumes the same run.

Exit codes: 0 done; 1 the run failed (`results.json` says why); 2 a user error (one
line); 75 stopped by SIGTERM or SIGINT at a safe point with a checkpoint, and 76
stopped by one without a new checkpoint (no safe point within `train.grace_seconds`,
or a second signal): rerun the same command to resume (`jaxshrink.runtime.preemption`).

Several processes (hosts) as one job, with JAX's own arguments (`jaxshrink.runtime.distributed`;
none are needed under SLURM's `srun` or Open MPI, which JAX reads itself):

    python -m jaxshrink.main --config=configs/sweep.py --workdir=/shared/sweep \
        --coordinator_address=host0:12345 --num_processes=2 --process_id=0   # and =1
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxshrink.core import errors
from jaxshrink.experiments import runner
from jaxshrink.runtime import compile_cache, distributed, preemption

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/sobel.py:quick."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<config>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for a job of several processes (jax.distributed).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0 to N-1.")
_JOIN_TIMEOUT = flags.DEFINE_integer(
    "distributed_timeout", 60, "Seconds to wait for every process of the job to join."
)
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout",
    60,
    "Seconds the job goes on after one of its processes stopped answering (then all stop).",
)
flags.mark_flags_as_required(["config"])


def default_workdir(config_arg: str) -> str:
    """`configs/sobel.py:quick` -> `runs/sobel-quick`."""
    path, _, preset = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}-{preset}" if preset else name)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    config = _CONFIG.value
    try:
        compile_cache.use()
        distributed.initialize(
            _COORDINATOR.value,
            _NUM_PROCESSES.value,
            _PROCESS_ID.value,
            timeout_s=_JOIN_TIMEOUT.value,
            heartbeat_s=_HEARTBEAT.value,
        )
        # The config's section selects the experiment (`jaxshrink.experiments.registry`).
        status = runner.status(runner.run(config, workdir))
        if status != "ok":  # a run that could not go on: results.json says why
            print(f"jaxshrink: run failed: {status}", file=sys.stderr)
            sys.exit(1)
    except errors.UserError as e:  # the user's to fix: one line, no traceback
        print(f"jaxshrink: error: {e}", file=sys.stderr)
        sys.exit(2)
    except preemption.Stopped as e:  # SIGTERM/SIGINT: checkpoint written, rerun resumes
        print(f"jaxshrink: {e}", file=sys.stderr, flush=True)
        sys.exit(preemption.EXIT_CODE)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config reported in one line (exit 2)."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, errors.UserError, AttributeError, KeyError) as e:
        message = str(e)
        cause = e
        while cause is not None:  # the root user error says most
            if isinstance(cause, errors.UserError):
                message = str(cause)
                break
            cause = cause.__cause__ or cause.__context__
        if "jaxshrink.core.errors." in message:  # a config file's error, as absl formats it
            message = re.split(r"jaxshrink\.core\.errors\.\w+: ", message)[-1]
        elif isinstance(e, (AttributeError, KeyError)):  # an override names no config field
            message = f"unknown config field {message}; see the config file for the fields"
        print(f"jaxshrink: error: {message.splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
