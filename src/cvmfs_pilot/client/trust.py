"""Trusting a repository revision as the real client does (§3, §4): the manifest signed by a certificate that the
master-key-signed, unexpired whitelist lists and no blacklist names; the repository name; and no rollback below
what this cache has seen (the breadcrumb)."""

import datetime

from cvmfs_pilot.cvmfs.manifest import Manifest, ManifestError
from cvmfs_pilot.cvmfs.signature import Certificate, SignatureError, verify_manifest, verify_whitelist
from cvmfs_pilot.cvmfs.whitelist import Whitelist, WhitelistError, parse_fingerprint

MAX_SIGNED_FILE = 1024 * 1024  # manifests and whitelists are a few hundred bytes


class TrustError(Exception):
    """A revision cannot be trusted; the message says what failed and what to do."""


class Blacklist(object):
    """Certificate fingerprints that must never be trusted, and ``<fqrn NNN`` revision floors."""

    def __init__(self, fingerprints=(), revision_floors=None):
        self.fingerprints = set(fingerprints)
        self.revision_floors = dict(revision_floors or {})

    @classmethod
    def parse(cls, texts):
        """From the text of blacklist files (local ``blacklist`` and the config repository's)."""
        fingerprints, floors = set(), {}
        for text in texts:
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("<"):
                    parts = line[1:].split()
                    if len(parts) == 2 and parts[1].isdigit():
                        floors[parts[0]] = max(floors.get(parts[0], 0), int(parts[1]))
                    continue
                fingerprint = parse_fingerprint(line)
                if fingerprint is not None:
                    fingerprints.add(fingerprint)
        return cls(fingerprints, floors)

    def names(self, certificate):
        return any(certificate.fingerprint(fp.algorithm) == fp for fp in self.fingerprints)


class TrustedRevision(object):
    """A verified manifest, with the certificate and whitelist that vouched for it."""

    def __init__(self, manifest, certificate, whitelist):
        self.manifest = manifest
        self.certificate = certificate
        self.whitelist = whitelist


def verify_revision(fqrn, manifest_bytes, whitelist_bytes, load_certificate, master_keys, blacklist,
                    breadcrumb=None, now=None):
    """Check a fetched manifest and whitelist; returns a TrustedRevision or raises TrustError.

    ``load_certificate(content_hash)`` returns the PEM bytes of the certificate object (fetched and verified by
    hash). ``breadcrumb`` is ``(root hash, timestamp, revision)`` of the newest revision this cache has seen.
    """
    try:
        manifest = Manifest.parse(manifest_bytes, expected_fqrn=fqrn)
    except (ManifestError, ValueError) as exc:
        raise TrustError("manifest of {}: {}".format(fqrn, exc))
    if manifest.certificate is None:
        raise TrustError("manifest of {} names no certificate (X); the repository is not signed".format(fqrn))
    if breadcrumb is not None:
        _, seen_timestamp, seen_revision = breadcrumb
        if (manifest.timestamp or 0) < seen_timestamp or manifest.revision < seen_revision:
            raise TrustError("manifest of {} is older (revision {}, published {}) than the revision {} this cache "
                             "has already seen: refusing a rollback; a server or proxy serves stale data".format(
                                 fqrn, manifest.revision, manifest.timestamp, seen_revision))
    try:
        certificate = Certificate.from_pem(load_certificate(manifest.certificate))
    except ValueError as exc:
        raise TrustError("certificate {} of {} is not usable: {}".format(manifest.certificate.hex(), fqrn, exc))
    try:
        verify_manifest(manifest_bytes, certificate)
    except SignatureError as exc:
        raise TrustError("manifest of {}: {}".format(fqrn, exc))
    try:
        verify_whitelist(whitelist_bytes, master_keys)
        whitelist = Whitelist.parse(whitelist_bytes, expected_fqrn=fqrn)
    except (SignatureError, WhitelistError, ValueError) as exc:
        raise TrustError("whitelist of {}: {}".format(fqrn, exc))
    now = now or datetime.datetime.utcnow()
    if whitelist.is_expired(now):
        raise TrustError("whitelist of {} expired on {} UTC; the repository owner must re-sign it (cvmfs-pilot "
                         "repo resign)".format(fqrn, whitelist.expires.strftime("%Y-%m-%d %H:%M")))
    if not any(certificate.fingerprint(fp.algorithm) == fp for fp in whitelist.fingerprints):
        raise TrustError("the certificate that signed {} (fingerprint {}) is not on its whitelist; the repository "
                         "was signed with a key the owner did not authorise".format(
                             fqrn, certificate.fingerprint().hex()))
    if blacklist.names(certificate):
        raise TrustError("the certificate that signed {} is blacklisted; do not use this repository until its "
                         "owner publishes with a new key".format(fqrn))
    floor = blacklist.revision_floors.get(fqrn)
    if floor is not None and manifest.revision < floor:
        raise TrustError("revision {} of {} is below the blacklisted floor {}".format(manifest.revision, fqrn,
                                                                                        floor))
    return TrustedRevision(manifest, certificate, whitelist)
