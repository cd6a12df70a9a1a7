"""An on-disk cache of prepared datasets: one ``.npz`` file per config, written atomically.

A dataset that is slow to prepare (decoding and cropping images, computing edge targets) stores
its two splits here under a key that hashes everything that determines the arrays; the caller
builds that key. Each file also keeps a few notes (the warnings given while building), so a
load from the cache can repeat them. Only numpy arrays of numbers and strings are stored, read
back without pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from jaxshrink.data.split import Dataset, Split


def resolve_cache_dir(cache_dir: str) -> Path:
    """Returns `cache_dir`, or ``$JAXSHRINK_CACHE``, or ``~/.cache/jaxshrink``, first set wins."""
    chosen = cache_dir or os.environ.get("JAXSHRINK_CACHE") or "~/.cache/jaxshrink"
    return Path(chosen).expanduser()


def hash_key(content: dict) -> str:
    """Returns a short hex digest of JSON-able `content`, independent of its key order."""
    text = json.dumps(content, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read(path: Path) -> tuple[Dataset, tuple[str, ...]] | None:
    """Returns the cached dataset (without info) and its notes, or None if there is none.

    An unreadable file (truncated, not an npz, missing arrays) is ignored with a warning, so
    the caller rebuilds it.
    """
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            dataset = Dataset(
                train=_split_from_arrays(arrays, "train"), eval=_split_from_arrays(arrays, "eval")
            )
            return dataset, tuple(str(note) for note in arrays["notes"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        warnings.warn(
            f"jaxshrink.data: ignoring unreadable cache {path} ({err}); rebuilding.", stacklevel=3
        )
        return None


# The arrays keep the names `*_images` from before `Split.images` became `Split.inputs`, so
# caches written then still load.
def _split_from_arrays(arrays, split: str) -> Split:
    sources = tuple(str(source) for source in arrays[f"{split}_sources"])
    return Split(arrays[f"{split}_images"], arrays[f"{split}_targets"], sources)


def write(path: Path, dataset: Dataset, notes: tuple[str, ...]) -> None:
    """Stores the two splits of `dataset` and `notes` at `path` (its `info` is not stored)."""
    arrays = {"notes": np.asarray(notes, dtype=str)}
    for split in ("train", "eval"):
        part = getattr(dataset, split)
        arrays[f"{split}_images"] = part.inputs
        arrays[f"{split}_targets"] = part.targets
        arrays[f"{split}_sources"] = np.asarray(part.sources, dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees a half-written file.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp_name, path)
    except BaseException:
        os.unlink(tmp_name)
        raise
