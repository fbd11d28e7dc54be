"""The publisher's error type: every failure names what failed, why, and what to do."""


class PublishError(Exception):
    """A publish, resign or check could not be completed; the previous revision stays served."""
