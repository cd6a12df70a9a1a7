"""Configs: the schema of every field (`schema`), the loader of config files (`loader`),
validation (`validate`) and resolution of the automatic values (`resolve`).

`prepare(config, model)` is what a job does with its config before any work: validate
it, then resolve it; the job runs, records and compares on resume the resolved one.
"""

from __future__ import annotations

import ml_collections

from jaxshrink.config.loader import load
from jaxshrink.config.schema import base_config, common_config, get_preset

__all__ = ["base_config", "common_config", "get_preset", "load", "prepare"]


def prepare(config: ml_collections.ConfigDict, model=None) -> ml_collections.ConfigDict:
    """`config` validated (`validate.validate`) and resolved (`resolve.resolve`).

    Args:
      config: a config from `configs/` or `schema`; it is not changed.
      model: your own `models.Model`, if the run has one.

    Returns:
      A new config with every automatic value concrete: what the run reads and its
      workdir records.

    Raises:
      errors.ConfigError: a field is invalid (one line naming it).
    """
    # Imported here: config files import `jaxshrink.config` for the schema alone.
    from jaxshrink.config import resolve, validate

    validate.validate(config, model)
    return resolve.resolve(config, model)
