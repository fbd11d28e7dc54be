"""The whitelist ``.cvmfswhitelist`` (§4): which certificates may sign the repository, and until when."""

import datetime

from .hashing import ALGORITHM_IDS, ContentHash, SHA1
from .signed import split_signed

TIME_FORMAT = "%Y%m%d%H%M%S"


class WhitelistError(ValueError):
    """A whitelist is malformed, for another repository, or expired."""


def format_fingerprint(content_hash):
    """``AA:BB:...`` uppercase, plus the uppercased algorithm id for non-SHA-1 hashes."""
    text = ":".join("{:02X}".format(b) for b in content_hash.digest)
    return text + ALGORITHM_IDS[content_hash.algorithm].upper()


def parse_fingerprint(line):
    """The fingerprint of one whitelist or blacklist line, or None if the line is not one (the real parser
    ignores such lines). Anything after a space, tab or ``#`` is a comment."""
    for stop in (" ", "\t", "#"):
        line = line.split(stop, 1)[0]
    text = line.replace(":", "").lower()
    if not text:
        return None
    try:
        return ContentHash.parse(text)
    except ValueError:
        return None


def certificate_fingerprint(der_bytes, algorithm=SHA1):
    """The fingerprint of a certificate: the hash of its DER encoding."""
    return ContentHash.of(der_bytes, algorithm)


def _parse_time(text, what):
    try:
        return datetime.datetime.strptime(text, TIME_FORMAT)
    except ValueError:
        raise WhitelistError("whitelist {} {!r} is not YYYYMMDDHHMMSS".format(what, text))


class Whitelist(object):
    def __init__(self, fqrn, created, expires, fingerprints, pkcs7=False, ca_chain=False):
        self.fqrn = fqrn
        self.created = created  # naive UTC datetimes
        self.expires = expires
        self.fingerprints = list(fingerprints)
        self.pkcs7 = pkcs7
        self.ca_chain = ca_chain

    def body(self):
        lines = [self.created.strftime(TIME_FORMAT), "E" + self.expires.strftime(TIME_FORMAT), "N" + self.fqrn]
        if self.pkcs7:
            lines.append("Vpkcs7")
        if self.ca_chain:
            lines.append("Wcachain")
        lines += [format_fingerprint(fp) for fp in self.fingerprints]
        return ("\n".join(lines) + "\n").encode("ascii")

    def is_expired(self, now=None):
        """Expiry is checked to the hour, as the real client does: valid while now's (Y, M, D, H) is earlier."""
        now = now or datetime.datetime.utcnow()
        hour = lambda t: (t.year, t.month, t.day, t.hour)  # noqa: E731
        return not hour(now) < hour(self.expires)

    def lists(self, fingerprint):
        return fingerprint in self.fingerprints

    @classmethod
    def parse(cls, data, expected_fqrn=None):
        signed = split_signed(data, "whitelist")
        try:
            text = signed.body.decode("ascii")
        except UnicodeDecodeError:
            raise WhitelistError("whitelist is not ASCII text")
        lines = text.split("\n")[:-1]
        if len(lines) < 3:
            raise WhitelistError("whitelist is too short: it needs a creation time, an E line and an N line")
        if len(lines[0]) != 14:
            raise WhitelistError("whitelist creation time {!r} is not 14 characters".format(lines[0]))
        created = _parse_time(lines[0], "creation time")
        if not lines[1].startswith("E") or len(lines[1]) != 15:
            raise WhitelistError("whitelist line 2 must be 'E' and a 14-character expiry time")
        expires = _parse_time(lines[1][1:], "expiry time")
        if not lines[2].startswith("N"):
            raise WhitelistError("whitelist line 3 must be 'N' and the repository name")
        fqrn = lines[2][1:]
        if expected_fqrn is not None and fqrn != expected_fqrn:
            raise WhitelistError("whitelist is for repository {!r}, not {!r}".format(fqrn, expected_fqrn))
        rest = lines[3:]
        pkcs7 = bool(rest) and rest[0] == "Vpkcs7"
        if pkcs7:
            rest = rest[1:]
        ca_chain = bool(rest) and rest[0] == "Wcachain"
        if ca_chain:
            rest = rest[1:]
        fingerprints = [fp for fp in (parse_fingerprint(line) for line in rest) if fp is not None]
        return cls(fqrn, created, expires, fingerprints, pkcs7=pkcs7, ca_chain=ca_chain)
