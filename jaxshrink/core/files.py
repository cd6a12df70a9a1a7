"""Atomic output writers (a reader sees the old file or the new one, never half of one), and
the package's cache folder.

Every writer goes through `atomic_path`: the content is written to a temporary file
(named ``.tmp-*``) in the destination's own folder, flushed to disk, then moved onto
the destination with `os.replace`, which is atomic on POSIX and Windows when both
paths are on the same file system (hence the same folder). A sweep that is killed
mid-write, or a dashboard that polls the folder, therefore never finds a truncated
JSON or CSV file.

`write_csv` and `read_csv` round-trip the flat rows the experiments produce: ints,
floats (at full ``repr`` precision, so nothing is lost), booleans, ``None`` and
strings.

`cache_root` is the one folder the package keeps reusable things in (prepared datasets,
compiled programs): ``$JAXSHRINK_CACHE``, else ``~/.cache/jaxshrink``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxshrink.core import errors

__all__ = [
    "atomic_path",
    "cache_root",
    "read_csv",
    "write_csv",
    "write_json",
    "write_text",
]

_TMP_PREFIX = ".tmp-"
_CACHE_DEFAULT = "~/.cache/jaxshrink"
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|nan|inf)", re.IGNORECASE)


def cache_root() -> Path:
    """The package's cache folder: ``$JAXSHRINK_CACHE`` if set, else ``~/.cache/jaxshrink``.

    Prepared datasets (`jaxshrink.data.cache`) and compiled programs
    (`jaxshrink.runtime.compile_cache`) are kept below it. It is not created here.
    """
    return Path(os.environ.get("JAXSHRINK_CACHE") or _CACHE_DEFAULT).expanduser()


def _umask() -> int:
    # os.umask can only be read by setting it; do it once, at import.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would have given a new file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yields a temporary path to write; moves it onto `path` when the block succeeds.

    The temporary file lies in `path`'s folder (created if missing), its name starts
    with ``.tmp-`` and it keeps `path`'s suffix, so tools that infer the format from
    the name (``fig.savefig(tmp)``) do the right thing. If the block raises, the
    temporary file is removed and `path` is left as it was; a disk that refuses the
    write (no space, read-only, quota) is raised as `errors.WriteFailed` naming `path`.

    Args:
      path: the file to (re)place.

    Yields:
      The temporary path, as a string. It exists (empty) when the block starts.

    Example:
      >>> with atomic_path("out/figure.png") as tmp:  # doctest: +SKIP
      ...     fig.savefig(tmp)
    """
    path = os.fspath(path)
    tmp = None
    try:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        suffix = os.path.splitext(path)[1]
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=suffix, dir=folder)
        os.close(fd)
        yield tmp
        _fsync(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        cause = None if isinstance(e, errors.UserError) else errors.disk_failure(e)
        if cause is not None:  # a full or read-only disk: the user's to fix
            raise errors.write_failed(
                path, cause, f"{os.path.basename(path)} as it was before is kept"
            ) from e
        raise


def _fsync(path: str) -> None:
    # Without this a crash right after the rename can leave an empty file behind.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike[str], text: str) -> str:
    """Writes `text` (UTF-8) to `path` atomically and returns `path` as a string."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(path)


def provenance(command: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Where and when a measurement was made, for the head of its JSON: device, backend,
    device count, jax version, platform, date and the command line (`command` followed
    by `argv`, default the process's own arguments)."""
    import datetime
    import platform
    import sys

    import jax

    args = sys.argv[1:] if argv is None else argv
    return {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "platform": platform.platform(),
        "date": datetime.date.today().isoformat(),
        "command": " ".join([command, *args]),
    }


def write_json(path: str | os.PathLike[str], obj: Any) -> str:
    """Writes `obj` as indented JSON with a trailing newline, atomically.

    NumPy scalars and arrays are converted to Python numbers and lists, tuples to
    lists, and NaN or infinite floats to ``null``, so the file is strict JSON that
    any reader (including browsers) can parse.

    Returns:
      `path`, as a string.
    """
    return write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):  # numpy values
        obj = obj.tolist()
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_csv(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    fieldnames: Sequence[str] | None = None,
) -> str:
    """Writes `rows` as a CSV file with a header, atomically.

    Args:
      path: the CSV file.
      rows: one mapping per line. A key missing from a row is written empty (read
        back as ``None``); a key not in `fieldnames` is an error.
      fieldnames: the columns, in order; defaults to the keys of the first row. With
        no rows and no fieldnames the file is empty.

    Returns:
      `path`, as a string.
    """
    if fieldnames is None:
        fieldnames = list(rows[0]) if rows else []
    buf = io.StringIO()
    if fieldnames:
        writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format_cell(v) for k, v in row.items()})
    return write_text(path, buf.getvalue())


def _format_cell(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest string that reads back to the same float
    return value


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Reads a CSV file with a header into one dict per line, with typed values.

    Each cell becomes an ``int`` if it looks like one, else a ``float`` (including
    ``nan`` and ``inf``), ``True``/``False`` for those exact words, ``None`` if
    empty, else the string as written.
    """
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _parse_cell(text: str | None) -> Any:
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text
