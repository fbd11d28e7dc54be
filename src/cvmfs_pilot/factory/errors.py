"""The errors of the factory; each message says what failed, why, and what to do."""


class FactoryError(Exception):
    """Base class: a factory command could not do what it was asked."""


class ConfigError(FactoryError):
    """factory.toml is unreadable or wrong; the message names the file and the key."""


class StageError(FactoryError):
    """A staging area cannot be written, or a file to stage is missing or clashes with another."""


class SubmitError(FactoryError):
    """Pilots cannot be submitted: nothing staged, or the batch system refused them."""


class ProviderError(FactoryError):
    """A batch system cannot be asked about, or cannot remove, a pilot."""
