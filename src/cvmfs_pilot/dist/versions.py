"""RPM version ordering: rpmvercmp (rpm 4.x rules, with ``~`` and ``^``) and epoch:version-release."""

import re
from functools import total_ordering

_DIGITS = re.compile(r"[0-9]+")
_LETTERS = re.compile(r"[A-Za-z]+")


def _isalnum(char):
    return char.isascii() and char.isalnum()


def rpmvercmp(a, b):
    """-1, 0 or 1 as version string a sorts before, equal to, or after b, as rpm compares them.

    Strings are split into runs of ASCII digits and letters; other characters only separate runs. Numeric runs
    compare as numbers and beat alphabetic ones; ``~`` sorts before anything, even the end of the string; ``^``
    sorts after the end of the string but before anything else.
    """
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not _isalnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < len(b) and not _isalnum(b[j]) and b[j] not in "~^":
            j += 1
        one = a[i] if i < len(a) else ""
        two = b[j] if j < len(b) else ""
        if one == "~" or two == "~":
            if one != "~":
                return 1
            if two != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if one == "^" or two == "^":
            if not one:
                return -1
            if not two:
                return 1
            if one != "^":
                return 1
            if two != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (one and two):
            break
        run = _DIGITS if one.isdigit() else _LETTERS
        first = run.match(a, i).group()
        second_match = run.match(b, j)
        if second_match is None:
            return 1 if run is _DIGITS else -1
        second = second_match.group()
        i, j = i + len(first), j + len(second)
        if run is _DIGITS:
            first, second = first.lstrip("0"), second.lstrip("0")
            if len(first) != len(second):
                return 1 if len(first) > len(second) else -1
        if first != second:
            return 1 if first > second else -1
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


@total_ordering
class EVR:
    """epoch:version-release, ordered as rpm orders packages of one name."""

    __slots__ = ("epoch", "version", "release")

    def __init__(self, epoch, version, release):
        self.epoch = int(epoch or 0)
        self.version = version
        self.release = release

    def _compare(self, other):
        if self.epoch != other.epoch:
            return 1 if self.epoch > other.epoch else -1
        return rpmvercmp(self.version, other.version) or rpmvercmp(self.release, other.release)

    def __eq__(self, other):
        return isinstance(other, EVR) and self._compare(other) == 0

    def __lt__(self, other):
        return self._compare(other) < 0

    __hash__ = None  # versions such as 1.0 and 1.00 are equal but spelled differently

    def __str__(self):
        return "{}{}-{}".format("{}:".format(self.epoch) if self.epoch else "", self.version, self.release)

    def __repr__(self):
        return "EVR({!r})".format(str(self))
