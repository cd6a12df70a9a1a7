"""XLA's compiled programs kept on disk, so that rerunning a config skips compiling.

The command line (`jaxshrink.main`) calls `use()` before anything compiles. A library
user who wants the same calls it too, or sets JAX's own options.
"""

from __future__ import annotations

import os
import sys

import jax

from jaxshrink.core import errors, files

CHOICES = ("0", "1")  # JAXSHRINK_COMPILE_CACHE: off, on (the default)


def use() -> str | None:
    """Keeps compiled programs on disk in `<cache root>/xla` (`files.cache_root`:
    ``$JAXSHRINK_CACHE``, else ``~/.cache/jaxshrink``), beside the prepared datasets, so
    that rerunning or resuming a config skips XLA's compile of its programs (the quick run
    on 2 CPU cores: 36-41 s warm, 48-51 s without). JAX's own ``JAX_COMPILATION_CACHE_DIR``
    wins when set; ``JAXSHRINK_COMPILE_CACHE=0`` turns it off. A folder others may write to
    is not used (one note line). Returns the folder used, or None.

    Raises:
      errors.ConfigError: JAXSHRINK_COMPILE_CACHE is neither '0' nor '1'.
    """
    switch = os.environ.get("JAXSHRINK_COMPILE_CACHE", "1")
    if switch not in CHOICES:
        raise errors.ConfigError(
            f"JAXSHRINK_COMPILE_CACHE (environment): got {switch!r}; allowed: {CHOICES}"
        )
    if switch == "0":
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    folder = files.cache_root() / "xla"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        shared = folder.stat().st_mode & 0o022
    except OSError:  # a read-only home: compile every time, as without the cache
        return None
    if shared:
        # JAX runs what it reads from this folder: one that others may write to would
        # let them run code in this process (JAX's own warning about the cache).
        print(
            f"jaxshrink: note: not keeping compiled programs in {folder}: others may write "
            "to it (chmod go-w it, or set JAXSHRINK_COMPILE_CACHE=0 to silence this)",
            file=sys.stderr,
            flush=True,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return str(folder)
