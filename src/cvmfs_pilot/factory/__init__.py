"""The factory (server tier): staging areas for pilots, submission to batch systems, status and removal.

The API, for scripts and tests::

    config = load_config("factory.toml")
    index_sha256, frontend_sha256 = stage(config)
    records = submit(config, "local-test", 2)          # [PilotRecord]
    status(config, entry=None)                          # [dict]
    remove(config, [record.id for record in records])

docs/glidein.md is the contract with the pilot; the commands are in cli.py.
"""

from .config import FactoryConfig, load_config
from .errors import ConfigError, FactoryError, ProviderError, StageError, SubmitError
from .pilots import PilotRecord, describe, remove, status, submit
from .staging import stage

__all__ = ["ConfigError", "FactoryConfig", "FactoryError", "PilotRecord", "ProviderError", "StageError",
           "SubmitError", "describe", "load_config", "remove", "stage", "status", "submit"]
