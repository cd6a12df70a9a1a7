"""Orbax persistence of a run's state between stages and rounds.

Orbax is not in the inner loop: rollback during minimization keeps the last accepted
state in memory (JAX arrays are immutable). Checkpoints make a run resumable: each
save is a numbered step directory holding the state pytree and a small JSON record
(stage, scores, round log). Orbax writes into a temporary directory and renames it
when complete, so an interrupted save never looks like a finished checkpoint.

The state is saved as Flax's state dict (nested dicts of arrays) and restored into
a template of the same structure, so any pytree (dataclasses, optax NamedTuples)
round-trips exactly.

In a job of several processes (`jaxshrink.runtime.distributed`) the state's arrays are
global, sharded over the run axis: every process calls `save` and `restore`
together, orbax writes each process's shards and process 0 the metadata, and a
restore puts the runs back on the devices given by `sharding`.
"""

from __future__ import annotations

import glob
import os
import shutil
import warnings
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxshrink.core import errors
from jaxshrink.runtime import distributed

# The suffix of the temporary folder orbax writes a checkpoint into before renaming it.
_ORBAX_TMP = ".orbax-checkpoint-tmp"


class RunCheckpointer:
    """Numbered checkpoints of (state pytree, JSON metadata) in one directory."""

    def __init__(self, directory: str, max_to_keep: int = 3, sharding=None):
        """`sharding`: where restored run-level arrays go (None: host numpy)."""
        self.directory = os.path.abspath(directory)  # orbax requires absolute paths
        self.sharding = sharding
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
            ),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        """The number of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves `state` and `meta` as checkpoint `step` (blocking).

        Raises:
          errors.WriteFailed: the disk refused the write (no space, read-only, quota);
            the partial save is removed and the checkpoints before are intact.
        """
        state_dict = jax.tree.map(_savable, flax.serialization.to_state_dict(state))
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            self._manager.wait_until_finished()
        except Exception as e:
            cause = errors.disk_failure(e)
            if cause is None:
                raise
            # Orbax wrote into a temporary folder; the checkpoints before stand.
            for partial in glob.glob(os.path.join(self.directory, f"{step}{_ORBAX_TMP}*")):
                shutil.rmtree(partial, ignore_errors=True)
            last = self.latest_step()
            kept = (
                f"checkpoint {last} is kept" if last is not None else "no checkpoint was written"
            )
            raise errors.write_failed(
                os.path.join(self.directory, str(step)), cause, kept
            ) from e

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """Restores checkpoint `step` into the structure of `template`."""
        template_dict = flax.serialization.to_state_dict(template)
        abstract = jax.tree.map(self._abstract, template_dict)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        state = flax.serialization.from_state_dict(template, restored["state"])
        return state, dict(restored["meta"])

    def restore_latest(self, template: Any) -> tuple[int | None, Any, dict]:
        """The newest checkpoint that restores, as (step, state, meta); (None, template, {}).

        A checkpoint that fails to restore (damaged files, bad metadata, a structure
        that no longer matches) is moved aside to `damaged-<step>` with a warning and
        the previous one is tried. In a job of several processes the verdict is the
        job's: a checkpoint any process cannot restore is damaged for all, process 0
        moves it and every process waits for the move before trying the previous
        one. Orbax never exposes an incomplete save: it writes
        into a temporary folder and renames it when complete.
        """
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, template)
                failure = None
            except Exception as e:  # noqa: BLE001 (any failure means: not usable)
                failure = e
            # Decided once for the job: damaged if any process failed to restore it.
            if distributed.all_agree(failure is None):
                return step, state, meta
            aside = os.path.join(self.directory, f"damaged-{step}")
            if failure is None:
                failure = RuntimeError("another process of the job could not restore it")
            warnings.warn(
                f"checkpoint {step} in {self.directory} is damaged "
                f"({type(failure).__name__}: {_first_line(failure)}); "
                f"moved to {aside}, trying the previous one",
                stacklevel=2,
            )
            if distributed.is_primary():  # one process moves it; all reload after
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(os.path.join(self.directory, str(step)), aside)
            distributed.barrier(f"jaxshrink-damaged-{step}")
            self._manager.reload()
        return None, template, {}

    def _abstract(self, leaf) -> jax.ShapeDtypeStruct:
        shape = np.shape(leaf)
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        if self.sharding is None or not shape:
            return jax.ShapeDtypeStruct(shape, dtype)
        return jax.ShapeDtypeStruct(shape, dtype, sharding=self.sharding)

    def close(self) -> None:
        self._manager.close()


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""


def _local(leaf) -> bool:
    """True unless `leaf` is a global array with shards in other processes."""
    return not (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable)


def _savable(leaf):
    """This process's arrays as numpy; global arrays as they are (orbax writes each
    process's shards)."""
    return np.asarray(leaf) if _local(leaf) else leaf
