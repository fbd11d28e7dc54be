"""The repository manifest ``.cvmfspublished`` (§3): parse and serialise its body; signing lives in the server
tier, verification in :mod:`cvmfs_pilot.cvmfs.signature`."""

from .hashing import ContentHash
from .paths import ROOT_MD5_HEX
from .signed import SignedFileError, split_signed


class ManifestError(ValueError):
    """A manifest is malformed or does not belong to the repository."""


# Writer order of the real server (Manifest::ExportString): these always, then the optional ones.
_ALWAYS = ("C", "B", "R", "D", "S", "G", "A")
_OPTIONAL = ("L", "N", "X", "H", "T", "M", "Y")


class Manifest(object):
    """The fields of a manifest. Hash fields are :class:`ContentHash` objects (or None)."""

    def __init__(self, root_catalog, root_catalog_size, revision, ttl=240, fqrn=None, certificate=None,
                 history=None, timestamp=None, meta_info=None, reflog=None, garbage_collectable=False,
                 alt_catalog_path=False, micro_catalog=None, extra=None):
        self.root_catalog = root_catalog
        self.root_catalog_size = root_catalog_size
        self.revision = revision
        self.ttl = ttl
        self.fqrn = fqrn
        self.certificate = certificate
        self.history = history
        self.timestamp = timestamp
        self.meta_info = meta_info
        self.reflog = reflog
        self.garbage_collectable = garbage_collectable
        self.alt_catalog_path = alt_catalog_path
        self.micro_catalog = micro_catalog
        self.extra = dict(extra or {})  # letters we do not interpret (V, Z, ...), kept verbatim

    def body(self):
        """The manifest text without signature, in the real writer's field order."""
        fields = {
            "C": self.root_catalog.hex(),
            "B": str(self.root_catalog_size),
            "R": ROOT_MD5_HEX,
            "D": str(self.ttl),
            "S": str(self.revision),
            "G": "yes" if self.garbage_collectable else "no",
            "A": "yes" if self.alt_catalog_path else "no",
        }
        optional = {
            "L": self.micro_catalog.hex() if self.micro_catalog else None,
            "N": self.fqrn,
            "X": self.certificate.hex() if self.certificate else None,
            "H": self.history.hex() if self.history else None,
            "T": str(self.timestamp) if self.timestamp is not None else None,
            "M": self.meta_info.hex() if self.meta_info else None,
            "Y": self.reflog.hex() if self.reflog else None,
        }
        lines = [k + fields[k] for k in _ALWAYS]
        lines += [k + optional[k] for k in _OPTIONAL if optional[k] is not None]
        lines += [k + v for k, v in sorted(self.extra.items())]
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data, expected_fqrn=None):
        """Parse a whole ``.cvmfspublished`` (signature part ignored here). Checks what the real client checks
        before trusting anything: required fields, the root path hash, and the repository name."""
        signed = split_signed(data, "manifest")
        fields = parse_key_values(signed.body)
        for key in ("C", "R", "D", "S"):
            if key not in fields:
                raise ManifestError("manifest has no '{}' line".format(key))
        if fields["R"] != ROOT_MD5_HEX:
            raise ManifestError("manifest root path hash is {!r}, not MD5('')".format(fields["R"]))
        fqrn = fields.get("N")
        if expected_fqrn is not None and fqrn != expected_fqrn:
            raise ManifestError("manifest belongs to repository {!r}, not {!r}".format(fqrn, expected_fqrn))

        def hash_field(key):
            value = fields.get(key)
            if value is None or value == "":
                return None
            try:
                return ContentHash.parse(value)
            except ValueError as exc:
                raise ManifestError("manifest field {}: {}".format(key, exc))

        def int_field(key, default=None):
            value = fields.get(key)
            if value is None:
                return default
            try:
                number = int(value)
            except ValueError:
                raise ManifestError("manifest field {} is not a number: {!r}".format(key, value))
            if number < 0:
                raise ManifestError("manifest field {} is negative".format(key))
            return number

        known = set(_ALWAYS) | set(_OPTIONAL)
        return cls(
            root_catalog=hash_field("C"),
            root_catalog_size=int_field("B", 0),
            revision=int_field("S"),
            ttl=int_field("D"),
            fqrn=fqrn,
            certificate=hash_field("X"),
            history=hash_field("H"),
            timestamp=int_field("T"),
            meta_info=hash_field("M"),
            reflog=hash_field("Y"),
            garbage_collectable=fields.get("G") == "yes",
            alt_catalog_path=fields.get("A") == "yes",
            micro_catalog=hash_field("L"),
            extra={k: v for k, v in fields.items() if k not in known},
        )


def parse_key_values(body):
    """``<letter><value>\\n`` lines up to a ``--`` line, as the real ``ParseKeyvalMem`` reads them: only complete
    lines count, repeated ``Z`` lines are joined with ``|``, later keys win otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignedFileError("signed file is not UTF-8 text")
    fields = {}
    lines = text.split("\n")
    for line in lines[:-1]:  # the part after the last newline is not a complete line
        if line == "--":
            break
        if not line:
            continue
        key, value = line[0], line[1:]
        if key == "Z" and key in fields:
            fields[key] += "|" + value
        else:
            fields[key] = value
    return fields
