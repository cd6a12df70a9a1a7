"""Errors that are the user's to fix, reported in one line with exit code 2.

Everything raised for a wrong config, unusable data, a busy workdir or a disk that
refuses a write (full, read-only, over quota) derives from
`UserError` (a `ValueError`, so library callers can catch it as before). The command
line prints ``jaxshrink: <message>`` without a traceback and exits with status 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os


class UserError(ValueError):
    """A problem with the user's input: config, data or workdir."""


class ConfigError(UserError):
    """A config field has a value jaxshrink cannot run with (names field and choices)."""


class DataError(UserError):
    """The configured data yields no usable image, or cannot be read at all."""


class WorkdirBusy(UserError):
    """Another live process holds the workdir."""


class WriteFailed(UserError):
    """A file or checkpoint could not be written: no space left, a read-only file
    system or a full quota. What was written before is intact; the rerun resumes."""


# The causes a user fixes by making room or choosing another place, not bugs.
_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
}


def disk_failure(exc: BaseException) -> str | None:
    """The disk cause of `exc` ('no space left on device', ...) or None.

    Follows the exception's causes, since libraries that write for us (orbax,
    tensorstore) wrap the `OSError`, or report it in their message only.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return _DISK_ERRNOS[exc.errno]
        message = str(exc).lower()
        for code, cause in _DISK_ERRNOS.items():
            if cause in message or os.strerror(code).lower() in message:
                return cause
        exc = exc.__cause__ or exc.__context__
    return None


def write_failed(path: str, cause: str, what: str = "") -> WriteFailed:
    """The one-line error for a write to `path` that failed for a disk `cause`."""
    kept = what or "the files written before are kept"
    return WriteFailed(
        f"cannot write {path}: {cause}; {kept}. Make room (or choose another --workdir) "
        "and rerun the same command to resume"
    )
