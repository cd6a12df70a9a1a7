"""Configs: the schema of every field (`schema`), the loader of config files (`loader`),
validation (`validate`) and resolution of the automatic values (`resolve`)."""

from jaxshrink.config.loader import load
from jaxshrink.config.schema import base_config, common_config

__all__ = ["base_config", "common_config", "load"]
