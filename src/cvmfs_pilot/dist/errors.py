"""The errors of the distribution builder; each message says what failed, why, and what to do."""


class DistError(Exception):
    """Base class: a distribution, or the whole run, could not be built."""


class UpstreamError(DistError):
    """The upstream definitions file is unreadable or inconsistent."""


class FetchError(DistError):
    """A download failed or delivered something other than what the repository metadata lists."""


class RepodataError(DistError):
    """Yum repository metadata is malformed or does not offer what is needed."""


class RpmError(DistError):
    """An RPM file is malformed or unsupported."""


class StagingError(DistError):
    """The staging area cannot be read, locked or written."""
