"""The one config loader: ``configs/<name>.py[:preset[,preset...]]`` to a `ConfigDict`.

A config file is Python that defines ``get_config(arg=None)``; the part after ``:`` is
passed as ``arg`` (presets applied in order, e.g. ``quick`` or ``t003,quick``). The command
line (absl's ``config_flags``), the benchmarks, the notebooks and the tests all read config
files through here or through the same ``get_config(arg)`` convention.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections

from jaxshrink.core import errors


def split_arg(config_arg: str) -> tuple[str, str | None]:
    """``'configs/sobel.py:quick'`` -> ``('configs/sobel.py', 'quick')``."""
    path, _, preset = config_arg.partition(":")
    return path, preset or None


def load_module(path: str):
    """The config file at `path` as a module (config files are not a package)."""
    if not os.path.isfile(path):
        raise errors.ConfigError(f"no config file {path!r}; allowed: a configs/*.py file")
    name = "jaxshrink_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    spec.loader.exec_module(module)
    return module


def load(config_arg: str) -> ml_collections.ConfigDict:
    """The config of ``path[:presets]``, as the command line would build it."""
    path, preset = split_arg(config_arg)
    return load_module(path).get_config(preset)
