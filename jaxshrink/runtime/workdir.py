"""One writer per workdir, and the same config on every resume.

`claim(workdir, config)` is a context manager every job enters before it computes:

* **lock**: an exclusive `fcntl.flock` on `<workdir>/.lock` (`.lock.<i>` for process
  i of a job of several processes). The kernel drops it when
  the holding process exits, however it exits (SIGKILL included), so a lock left by a
  dead process never blocks; a live holder makes a second process stop at once with
  `errors.WorkdirBusy`, naming the holder's pid, host, start time and command.
* **config**: the first run writes `<workdir>/config.json` (the config as resolved,
  `jaxshrink.config.resolve`: what its automatic values were); a later run (a resume)
  must have the same config, resolved the same way, apart from fields that only change
  how it executes or reports (`RESUMABLE`). Otherwise `errors.ConfigError` lists what
  changed, because resuming checkpoints under another config would silently mix two
  experiments.
  Options added to jaxshrink after the workdir was started are not changes: the run
  resumes with their values, says so in one line, and records them in `config.json`.
  A workdir that holds no progress (a run refused before it computed, e.g. by a data
  error found when the data loads, left only its config and lock) takes any config:
  the corrected command simply runs.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys

import ml_collections

from jaxshrink.core import errors, files

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected against a second writer
    fcntl = None

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
# Fields that may change between a run and its resume: how it executes or prints,
# not what it computes (the batch fields change results by float rounding at most,
# as 'auto' does when a run resumes on another backend).
RESUMABLE = ("batch", "train.log_every", "train.grace_seconds", "data.cache_dir", "output")


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _normalized(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON values (tuples become lists), as `config.json` holds it."""
    return json.loads(json.dumps(config.to_dict()))


def holds_progress(workdir: str) -> bool:
    """Whether `workdir` holds anything a run computed: every entry but the locks and
    `config.json` (checkpoints, results, pictures, a sweep's rows) counts."""
    return any(
        not (name.startswith(LOCK_NAME) or name == CONFIG_NAME) for name in os.listdir(workdir)
    )


def config_changes(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """'field: old -> new' for every field that differs and may not change on resume.

    A field the saved config lacks is not a change: it was added to jaxshrink after the
    workdir was started, and the run goes on with its value (`added_fields`). A field
    only the saved config has (since removed) is one: it cannot be honoured.
    """
    old, new = _flatten(saved), _flatten(_normalized(config))
    changes = []
    for field in sorted(old):
        if any(field == r or field.startswith(r + ".") for r in RESUMABLE):
            continue
        if old[field] != new.get(field, "<absent>"):
            changes.append(f"{field}: {old[field]!r} -> {new.get(field, '<absent>')!r}")
    return changes


def added_fields(saved: dict, config: ml_collections.ConfigDict) -> dict:
    """The fields of `config` the saved config lacks, with their values: options added
    to jaxshrink since the workdir was started."""
    old, new = _flatten(saved), _flatten(_normalized(config))
    return {field: new[field] for field in sorted(new) if field not in old}


def _nest(flat: dict) -> dict:
    out: dict = {}
    for field, value in flat.items():
        *parents, leaf = field.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            info = json.load(f)
        return (
            f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')} "
            f"({info.get('command')})"
        )
    except (OSError, ValueError):
        return "another process"


def lock_name() -> str:
    """`.lock`; `.lock.<i>` for process i of a job of several (`jaxshrink.runtime.distributed`),
    which share the workdir: each process of the job holds its own lock."""
    import jax  # here: the rest of this module needs no JAX

    return LOCK_NAME if jax.process_count() == 1 else f"{LOCK_NAME}.{jax.process_index()}"


def _primary() -> bool:
    import jax  # here: the rest of this module needs no JAX

    return jax.process_index() == 0


@contextlib.contextmanager
def claim(workdir: str, config: ml_collections.ConfigDict):
    """Holds `workdir` for this process (see module doc); yields the absolute path."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    lock_path = os.path.join(workdir, lock_name())
    handle = open(lock_path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise errors.WorkdirBusy(
                    f"workdir {workdir} is in use by {_holder(lock_path)}; wait for it to "
                    "finish or choose another --workdir"
                ) from None
        handle.seek(0)
        handle.truncate()
        json.dump(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
            },
            handle,
        )
        handle.flush()
        config_path = os.path.join(workdir, CONFIG_NAME)
        if os.path.exists(config_path):
            with open(config_path) as f:
                saved = json.load(f)
            # Markers a workdir started before they were resolved recorded, read as
            # what they mean now (`config.resolve.as_resolved`).
            from jaxshrink.config import resolve  # here: the rest needs no JAX

            changes = config_changes(resolve.as_resolved(saved, config), config)
            if changes and not holds_progress(workdir):
                # A run refused before it computed anything (a data error is found
                # only when the data loads) left only its config: the corrected
                # command takes the workdir as new.
                if _primary():
                    files.write_json(config_path, _normalized(config))
                changes = saved = None
            if changes:
                raise errors.ConfigError(
                    f"config changed since {workdir} was started ({'; '.join(changes)}); "
                    "rerun with the original config to resume, or choose another --workdir"
                )
            added = saved and added_fields(saved, config)
            if added:
                # Recorded, so that the next resume compares them too; said, because
                # the run's first part ran without them.
                if _primary():
                    files.write_json(config_path, _nest({**_flatten(saved), **added}))
                print(
                    f"jaxshrink: note: {workdir} was started before these options existed; "
                    "it resumes with "
                    + ", ".join(f"{field}={value!r}" for field, value in added.items()),
                    file=sys.stderr,
                    flush=True,
                )
        elif _primary():  # the job's processes share the workdir; one writes
            files.write_json(config_path, _normalized(config))
        yield workdir
    finally:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
