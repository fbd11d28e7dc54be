"""``repo resign``: renew the whitelist and re-sign the manifest of a repository, without publishing.

The manifest body stays byte for byte the same; only its signature is new. Nothing gets signed that the key set
cannot vouch for: the current whitelist must verify with the key set's master public key (its fingerprints are
kept, the key set's certificate is added if missing), and the current manifest must name the key set's certificate
and verify with it.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization

from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import PublicKey, verify_manifest, verify_whitelist
from cvmfs_pilot.cvmfs.signed import split_signed
from cvmfs_pilot.cvmfs.whitelist import Whitelist, format_fingerprint

from .check import read_certificate
from .errors import PublishError
from .keys import KeySet, resign_whitelist, sign_manifest, sign_whitelist
from .storage import MANIFEST, WHITELIST, Storage, describe_os_error


def resign(storage_dir: str | os.PathLike, keys_dir: str | os.PathLike, whitelist_days: int) -> str:
    """Re-sign the whitelist (valid ``whitelist_days`` from now) and the manifest of the repository in
    ``storage_dir`` with the key set in ``keys_dir`` (master key required). Returns a one-line summary."""
    if whitelist_days < 1:
        raise PublishError("a whitelist must be valid for at least one day, not {}".format(whitelist_days))
    storage = Storage(storage_dir)
    if not storage.exists():
        raise PublishError("{} has no {}: it is not the top directory of a repository".format(storage.root,
                                                                                             MANIFEST))
    try:
        storage.txn.mkdir(exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, "cannot create the lock directory of {}".format(storage.root)) from None
    storage.lock()
    try:
        return _resign_locked(storage, keys_dir, whitelist_days)
    finally:
        storage.unlock()


def _resign_locked(storage, keys_dir, whitelist_days):
    manifest_path = storage.root / MANIFEST
    manifest_bytes = storage.read_signed(MANIFEST)
    try:
        manifest = Manifest.parse(manifest_bytes)
    except ValueError as exc:
        raise PublishError("manifest {}: {}".format(manifest_path, exc)) from None
    fqrn = manifest.fqrn
    if not fqrn:
        raise PublishError("manifest {} has no N line, so it does not say which repository (and key set) it "
                           "belongs to; publish the repository again".format(manifest_path))
    keys = KeySet.load(keys_dir, fqrn)
    if keys.master_key is None:
        raise PublishError("re-signing the whitelist of {} needs its master key {}.masterkey, which is not in {}; "
                           "run resign where the master key is kept".format(fqrn, fqrn, keys_dir))
    certificate, _ = read_certificate(storage, manifest)
    own_der = keys.certificate.public_bytes(serialization.Encoding.DER)
    if certificate.der != own_der:
        raise PublishError(
            "the manifest of {} names certificate {} (fingerprint {}), but {}.crt in {} is another certificate: a "
            "manifest signed with {}.key would not verify with the certificate it names. Use the key set that "
            "published this revision, or publish a new revision with this key set".format(
                fqrn, manifest.certificate.hex(), format_fingerprint(certificate.fingerprint()), fqrn, keys_dir,
                fqrn))
    try:
        verify_manifest(manifest_bytes, certificate)
    except ValueError as exc:
        raise PublishError("the current manifest {} does not verify with {}.crt ({}); it was altered or damaged "
                           "after publishing, and resign does not sign what it cannot vouch for: publish a new "
                           "revision".format(manifest_path, fqrn, exc)) from None

    algorithm = manifest.root_catalog.algorithm  # the repository's hash algorithm
    whitelist = _renewed_whitelist(storage, keys, certificate, algorithm, whitelist_days)
    new_manifest = sign_manifest(split_signed(manifest_bytes, "manifest").body, algorithm, keys.signing_key)
    try:
        storage.replace_signed(WHITELIST, whitelist)  # the manifest must never name a certificate not yet listed
        storage.replace_signed(MANIFEST, new_manifest)
    except OSError as exc:
        raise describe_os_error(exc, "cannot write the re-signed whitelist and manifest of {}".format(fqrn)) from None
    renewed = Whitelist.parse(whitelist)
    return ("re-signed {} revision {}: whitelist valid until {:%Y-%m-%d %H:%M} UTC listing {} certificate(s), "
            "manifest signed by {!r} (fingerprint {})".format(
                fqrn, manifest.revision, renewed.expires, len(renewed.fingerprints), certificate.common_name,
                format_fingerprint(certificate.fingerprint(algorithm))))


def _renewed_whitelist(storage, keys, certificate, algorithm, days):
    """The new whitelist: the current one's fingerprints and flags (plus the certificate's fingerprint if it is
    missing), freshly dated and signed; or, if there is none, one listing the certificate."""
    fqrn = keys.fqrn
    fingerprint = certificate.fingerprint(algorithm)
    current = storage.read_signed(WHITELIST)
    if current is None:
        return sign_whitelist(fqrn, [fingerprint], keys.master_key, days=days, algorithm=algorithm)
    path = storage.root / WHITELIST
    numbers = keys.master_public_key.public_numbers()
    try:
        whitelist = Whitelist.parse(current, expected_fqrn=fqrn)
        verify_whitelist(current, [PublicKey(numbers.n, numbers.e)])
    except ValueError as exc:
        raise PublishError("current whitelist {}: {}. Resign keeps the fingerprints of a whitelist only if {}.pub "
                           "verifies it; remove the file to start a new whitelist that lists just this key set's "
                           "certificate".format(path, exc, fqrn)) from None
    if not any(fp == certificate.fingerprint(fp.algorithm) for fp in whitelist.fingerprints):
        whitelist.fingerprints.append(fingerprint)
    return resign_whitelist(whitelist.body(), keys.master_key, days=days, algorithm=algorithm)
