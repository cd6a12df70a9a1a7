"""Errors that are the user's to fix, reported in one line with exit code 2.

Everything raised for a wrong config, unusable data or a busy workdir derives from
`UserError` (a `ValueError`, so library callers can catch it as before). The command
line prints ``jaxshrink: <message>`` without a traceback and exits with status 2;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input: config, data or workdir."""


class ConfigError(UserError):
    """A config field has a value jaxshrink cannot run with (names field and choices)."""


class DataError(UserError):
    """The configured data yields no usable image, or cannot be read at all."""


class WorkdirBusy(UserError):
    """Another live process holds the workdir."""
