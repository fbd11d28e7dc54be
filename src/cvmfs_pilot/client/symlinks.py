"""Variable expansion in symlink targets, as the real client does unless ``CVMFS_RAW_SYMLINKS`` is set:
``$(VAR)`` and ``$(VAR:-default)`` from the client's environment; an unset variable without a default becomes
the empty string (with ``:-``, so does an empty one); a ``$(`` without a closing ``)`` stays as it is."""

import re

_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)(:-([^)]*))?\)")


def expand(target, environ):
    def substitute(match):
        value = environ.get(match.group(1), "")
        if match.group(2) is not None and not value:
            return match.group(3)
        return value

    return _VARIABLE.sub(substitute, target)
