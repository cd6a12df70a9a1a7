"""XLA's compiled programs kept on disk, so that rerunning a config skips compiling.

The command line (`jaxshrink.main`) calls `use()` before anything compiles. A library
user who wants the same calls it too, or sets JAX's own options.
"""

from __future__ import annotations

import os

import jax

from jaxshrink.data import cache as data_cache


def use() -> str | None:
    """Keeps compiled programs on disk in `<data cache>/xla` (`$JAXSHRINK_CACHE`, else
    ``~/.cache/jaxshrink``), so that rerunning or resuming a config skips XLA's compile
    of its programs (the quick run on 2 CPU cores: 36-41 s warm, 48-51 s without). JAX's
    own ``JAX_COMPILATION_CACHE_DIR`` wins when set; ``JAXSHRINK_COMPILE_CACHE=0`` turns
    it off. Returns the folder used, or None."""
    if os.environ.get("JAXSHRINK_COMPILE_CACHE", "1") == "0":
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    folder = data_cache.resolve_cache_dir("") / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile every time, as without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return str(folder)
