"""An on-disk cache of prepared datasets: one folder per config, written atomically, read mapped.

A dataset that is slow to prepare (decoding and cropping images, computing edge targets) stores
its two splits here under a key that hashes everything that determines the arrays; the caller
builds that key. An entry is a folder of four ``.npy`` files (``train_inputs``,
``train_targets``, ``eval_inputs``, ``eval_targets``) and ``meta.json`` (each example's source,
the notes given while building, so a load from the cache can repeat them, and a few facts).

Why a folder of ``.npy`` files and not one ``.npz``: at the thesis's size (34000 crops of
256x256) the arrays are gigabytes. `Writer` appends one example at a time to its files, so
building never holds a split in memory, and `read` maps the files (``mmap_mode='r'``), so
loading costs no copy and no memory beyond the pages used. The arrays are stored in the compact
dtypes of `jaxshrink.data.split` (uint8, float16) as the dataset module hands them over. Only
numbers and JSON are stored, read back without pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np

from jaxshrink.core import files
from jaxshrink.data.split import Dataset, Split, decode

SPLITS = ("train", "eval")
_ARRAYS = ("inputs", "targets")
# Every .npy file starts with a header of this size, written last, once the row count is known.
# 128 bytes keep the data 64-byte aligned and leave room for any shape's dictionary.
_HEADER_BYTES = 128
_MAGIC = b"\x93NUMPY\x01\x00"
# Rows rewritten per read when a file's dtype is widened (see `_RowFile`).
_WIDEN_CHUNK_BYTES = 1 << 26


def resolve_cache_dir(cache_dir: str) -> Path:
    """Returns `cache_dir`, or else the package's cache folder (`files.cache_root`:
    ``$JAXSHRINK_CACHE``, or ``~/.cache/jaxshrink``)."""
    return Path(cache_dir).expanduser() if cache_dir else files.cache_root()


def hash_key(content: dict) -> str:
    """Returns a short hex digest of JSON-able `content`, independent of its key order."""
    text = json.dumps(content, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read(path: Path, mmap: bool = True) -> tuple[Dataset, dict] | None:
    """Returns the cached dataset (without info) and its meta, or None if there is none.

    Args:
      path: the entry's folder.
      mmap: map the arrays read-only (the default), or read them into memory.

    The meta holds ``notes`` (a list of strings) and the facts the writer was given. An
    unreadable entry (truncated, missing files, not a cache entry) is ignored with a warning, so
    the caller rebuilds it (see `discard`).
    """
    if not path.exists():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())
        splits = []
        for split in SPLITS:
            inputs, targets = (
                np.load(path / f"{split}_{name}.npy", mmap_mode="r" if mmap else None)
                for name in _ARRAYS
            )
            splits.append(Split(inputs, targets, tuple(str(s) for s in meta["sources"][split])))
        if not isinstance(meta["notes"], list):
            raise ValueError("notes is not a list")
        return Dataset(*splits), meta
    except (OSError, ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError.
        warnings.warn(
            f"jaxshrink.data: ignoring unreadable cache {path} ({err}); rebuilding.", stacklevel=3
        )
        return None


def discard(path: Path) -> None:
    """Removes a cache entry (an unreadable one, before it is rebuilt)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def size_on_disk(path: Path) -> int:
    """Bytes of the files of a cache entry."""
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


class Writer:
    """Writes one cache entry example by example; `commit` puts it in place atomically.

    Use as a context manager: leaving it by an exception removes what was written. The entry is
    built in a temporary folder beside `path` and renamed to `path` on commit, so a reader never
    sees a half-written entry; if another process committed the same entry first, that one is
    kept (both hold the same arrays).
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp"))
        self._files = {
            (split, name): _RowFile(self._tmp / f"{split}_{name}.npy")
            for split in SPLITS
            for name in _ARRAYS
        }
        self._sources: dict[str, list[str]] = {split: [] for split in SPLITS}

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._tmp.exists():  # Not committed: an exception, or the caller never committed.
            for rows in self._files.values():
                rows.close_quietly()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def count(self, split: str) -> int:
        """Examples added to `split` so far."""
        return len(self._sources[split])

    def add(self, split: str, inputs: np.ndarray, targets: np.ndarray, source: str) -> None:
        """Appends one example to `split` (its arrays without the leading example axis)."""
        self._files[split, "inputs"].append(inputs)
        self._files[split, "targets"].append(targets)
        self._sources[split].append(source)

    def commit(self, notes: tuple[str, ...], facts: dict | None = None) -> None:
        """Finishes the files, writes the meta and moves the entry to its path."""
        for rows in self._files.values():
            rows.close()
        meta = {**(facts or {}), "notes": list(notes), "sources": self._sources}
        (self._tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(self._tmp, self.path)
        except OSError:
            if not self.path.is_dir():
                raise
            shutil.rmtree(self._tmp, ignore_errors=True)  # Another process's entry stands.


class _RowFile:
    """An ``.npy`` file grown one row at a time, its header written once the shape is known.

    All rows share one shape. They keep their dtype while it is the same for all of them; a row
    of another dtype widens the file to float32 (the rows so far are decoded and rewritten,
    see `jaxshrink.data.split.decode`), so a folder of 8-bit images with one 16-bit image among
    them is stored exactly, in float32.
    """

    def __init__(self, path: Path):
        self.path = path
        self.dtype: np.dtype | None = None
        self.shape: tuple[int, ...] | None = None
        self.rows = 0
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close()).
        self._file.write(bytes(_HEADER_BYTES))

    def append(self, row: np.ndarray) -> None:
        row = np.asarray(row)
        if self.dtype is None:
            self.dtype, self.shape = row.dtype, row.shape
        elif row.shape != self.shape:
            raise ValueError(f"{self.path.name}: row of shape {row.shape}, expected {self.shape}")
        elif row.dtype != self.dtype:
            if self.dtype != np.float32:
                self._widen()
            row = decode(row).astype(np.float32)
        self._file.write(np.ascontiguousarray(row, self.dtype).tobytes())
        self.rows += 1

    def _widen(self) -> None:
        """Rewrites the rows so far as float32."""
        self._file.close()
        narrow = self.path.with_suffix(".narrow")
        os.replace(self.path, narrow)
        self._file = open(self.path, "wb")  # noqa: SIM115
        self._file.write(bytes(_HEADER_BYTES))
        per_row = int(np.prod(self.shape, dtype=np.int64))
        chunk = max(1, _WIDEN_CHUNK_BYTES // max(1, per_row * self.dtype.itemsize))
        with open(narrow, "rb") as f:
            f.seek(_HEADER_BYTES)
            left = self.rows
            while left:
                n = min(chunk, left)
                values = np.fromfile(f, dtype=self.dtype, count=n * per_row)
                self._file.write(decode(values).astype(np.float32).tobytes())
                left -= n
        narrow.unlink()
        self.dtype = np.dtype(np.float32)

    def close(self) -> None:
        dtype = self.dtype if self.dtype is not None else np.dtype(np.float32)
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": (self.rows, *(self.shape or ())),
        }
        text = repr(header).encode("latin1")
        room = _HEADER_BYTES - len(_MAGIC) - 2
        if len(text) + 1 > room:  # A dictionary this long needs a shape of thousands of axes.
            raise ValueError(f"{self.path.name}: header {text!r} longer than {room} bytes")
        self._file.seek(0)
        self._file.write(_MAGIC + struct.pack("<H", room) + text.ljust(room - 1) + b"\n")
        self._file.close()

    def close_quietly(self) -> None:
        self._file.close()
