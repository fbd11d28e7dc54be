"""``repo check``: verify a repository completely, everything a client would trust and more.

Order: the manifest (name, root path hash) and its signature by the certificate object it names; the whitelist
(name, signature by one of the master keys, expiry, the certificate's fingerprint); the history and meta-info
objects; then every catalog reachable from the root catalog, depth first, and every object the catalogs reference,
each distinct object once. Content objects are verified by a thread pool (hashing and zlib release the GIL) while
the main thread walks the catalogs. The first problem found ends the check with a :class:`PublishError` saying
what is wrong where.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass

from cvmfs_pilot.cvmfs.compression import COMPRESSION_NAMES, ZLIB
from cvmfs_pilot.cvmfs.der import DerError
from cvmfs_pilot.cvmfs.hashing import (SUFFIX_CATALOG, SUFFIX_CERTIFICATE, SUFFIX_HISTORY, SUFFIX_METAINFO,
                                       ContentHash)
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import Certificate, load_public_keys, verify_manifest, verify_whitelist
from cvmfs_pilot.cvmfs.whitelist import Whitelist, format_fingerprint

from .catalog_check import STATISTICS_REQUIRED_SINCE, check_catalog, check_subtree
from .errors import PublishError
from .storage import MANIFEST, WHITELIST, Storage
from .stored_object import StoredObject, verify_object

CERTIFICATE_LIMIT = 1 << 20  # a PEM certificate has a few KB
META_INFO_LIMIT = 16 << 20
_SQLITE_HEADER = b"SQLite format 3\x00"
_IN_FLIGHT_PER_WORKER = 8
_MAX_WORKERS = 16  # most objects are small, so the threads also compete for the GIL: about one per core is best


@dataclass
class CheckReport:
    """What a successful check verified."""

    fqrn: str
    revision: int
    root_catalog: ContentHash
    catalogs: int = 0
    entries: int = 0
    objects: int = 0  # distinct objects read and verified, catalogs and certificate included
    stored_bytes: int = 0
    content_bytes: int = 0  # the same objects, decompressed
    external_files: int = 0  # files stored outside the repository, which a check cannot read
    seconds: float = 0.0

    def count(self, stored: StoredObject) -> None:
        self.objects += 1
        self.stored_bytes += stored.stored_size
        self.content_bytes += stored.content_size

    def summary(self) -> str:
        external = (", {} external files not verifiable here".format(self.external_files)
                    if self.external_files else "")
        return ("{} revision {} is intact: {} catalogs, {} entries, {} objects verified ({} stored, {} "
                "decompressed){} in {:.2f} s".format(self.fqrn, self.revision, self.catalogs, self.entries,
                                                     self.objects, _human(self.stored_bytes),
                                                     _human(self.content_bytes), external, self.seconds))


def _human(size):
    if size < 1000:
        return "{} bytes".format(size)
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return "{:.1f} {}".format(size, unit)


def check(storage_dir, fqrn: str, pubkey_paths: list[str], workers: int | None = None) -> CheckReport:
    """Verify repository ``fqrn`` in ``storage_dir`` against the master public key files ``pubkey_paths``.
    Returns a :class:`CheckReport`; raises :class:`PublishError` naming the first problem found."""
    started = time.monotonic()
    storage = Storage(storage_dir)
    master_keys = _master_keys(pubkey_paths)
    manifest_bytes, manifest = _read_manifest(storage, fqrn)
    report = CheckReport(fqrn, manifest.revision, manifest.root_catalog)
    certificate, stored = read_certificate(storage, manifest)
    report.count(stored)
    try:
        verify_manifest(manifest_bytes, certificate)
    except ValueError as exc:
        raise PublishError("manifest {}: {}".format(storage.root / MANIFEST, exc)) from None
    _check_whitelist(storage, fqrn, certificate, master_keys)
    _check_history(storage, manifest, report)
    _check_meta_info(storage, manifest, report)
    with tempfile.TemporaryDirectory(prefix="cvmfs-pilot-check-") as workdir:
        objects = _ObjectVerifier(storage.root, report, workers)
        try:
            _CatalogWalk(storage, manifest, workdir, objects, report).catalog(
                manifest.root_catalog, manifest.root_catalog_size, "")
            objects.finish()
        finally:
            objects.close()
    report.seconds = time.monotonic() - started
    return report


def read_certificate(storage: Storage, manifest: Manifest) -> tuple[Certificate, StoredObject]:
    """The certificate object ``X`` that ``manifest`` names, verified against its name before it is parsed."""
    if manifest.certificate is None:
        raise PublishError("the manifest of {} names no certificate (no X line), so no client can verify it; "
                           "publish the repository again".format(manifest.fqrn))
    pem = bytearray()
    stored = verify_object(storage.root, manifest.certificate, SUFFIX_CERTIFICATE, ZLIB,
                           "certificate named by the manifest", limit=CERTIFICATE_LIMIT, sink=pem.extend)
    try:
        return Certificate.from_pem(bytes(pem)), stored
    except (DerError, ValueError) as exc:
        raise PublishError("certificate object {} is not a PEM X.509 certificate with an RSA key: {}".format(
            manifest.certificate.object_path(SUFFIX_CERTIFICATE), exc)) from None


def _master_keys(pubkey_paths):
    keys = []
    for path in (p for p in pubkey_paths if p):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise PublishError("cannot read master public key {}: {}".format(path, exc.strerror)) from None
        try:
            keys += load_public_keys(data)
        except DerError as exc:
            raise PublishError("master public key {}: {}".format(path, exc)) from None
    if not keys:
        raise PublishError("no master public key given; pass the repository's .pub file(s)")
    return keys


def _read_signed(storage, name):
    try:
        return storage.read_signed(name)
    except OSError as exc:
        raise PublishError("cannot read {}: {}".format(storage.root / name, exc.strerror)) from None


def _read_manifest(storage, fqrn):
    data = _read_signed(storage, MANIFEST)
    if data is None:
        raise PublishError("{} has no {}: it is not the top directory of a repository".format(storage.root,
                                                                                             MANIFEST))
    try:
        manifest = Manifest.parse(data)
    except ValueError as exc:
        raise PublishError("manifest {}: {}".format(storage.root / MANIFEST, exc)) from None
    if manifest.fqrn is None:
        raise PublishError("manifest {} has no N line (repository name), which clients require; publish the "
                           "repository again".format(storage.root / MANIFEST))
    if manifest.fqrn != fqrn:
        raise PublishError("manifest {} is for repository {!r}, not {!r}; check the storage directory and the "
                           "repository name".format(storage.root / MANIFEST, manifest.fqrn, fqrn))
    return data, manifest


def _check_whitelist(storage, fqrn, certificate, master_keys):
    path = storage.root / WHITELIST
    data = _read_signed(storage, WHITELIST)
    if data is None:
        raise PublishError("{} is missing; create it with 'cvmfs-pilot repo resign'".format(path))
    try:
        whitelist = Whitelist.parse(data, expected_fqrn=fqrn)
        verify_whitelist(data, master_keys)
    except ValueError as exc:
        raise PublishError("whitelist {}: {}".format(path, exc)) from None
    if whitelist.is_expired():
        raise PublishError("whitelist of {} expired on {:%Y-%m-%d %H:%M:%S} UTC, so clients refuse the repository; "
                           "the repository owner must re-sign it with 'cvmfs-pilot repo resign'".format(
                               fqrn, whitelist.expires))
    if not any(fp == certificate.fingerprint(fp.algorithm) for fp in whitelist.fingerprints):
        raise PublishError("whitelist {} does not list the certificate that signs the manifest ({!r}, fingerprint "
                           "{}), so clients refuse the manifest; re-sign with 'cvmfs-pilot repo resign' and the "
                           "key set of that certificate".format(path, certificate.common_name,
                                                                format_fingerprint(certificate.fingerprint())))
    if whitelist.pkcs7 or whitelist.ca_chain:
        raise PublishError("whitelist {} demands a PKCS#7 signature or CA-chain verification (Vpkcs7/Wcachain), "
                           "which cvmfs-pilot cannot check".format(path))


def _check_history(storage, manifest, report):
    if manifest.history is None:
        return
    header = bytearray()

    def keep_header(data):
        if len(header) < len(_SQLITE_HEADER):
            header.extend(data[:len(_SQLITE_HEADER)])

    report.count(verify_object(storage.root, manifest.history, SUFFIX_HISTORY, ZLIB,
                               "history database named by the manifest", sink=keep_header))
    if not header.startswith(_SQLITE_HEADER):
        raise PublishError("history object {} is not an SQLite database".format(
            manifest.history.object_path(SUFFIX_HISTORY)))


def _check_meta_info(storage, manifest, report):
    if manifest.meta_info is None:
        return
    text = bytearray()
    report.count(verify_object(storage.root, manifest.meta_info, SUFFIX_METAINFO, ZLIB,
                               "meta-information named by the manifest", limit=META_INFO_LIMIT, sink=text.extend))
    try:
        json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PublishError("meta-information object {} is not JSON: {}; publish again with a valid --meta-info "
                           "file".format(manifest.meta_info.object_path(SUFFIX_METAINFO), exc)) from None


class _CatalogWalk:
    """Fetches, verifies and checks the catalog tree, depth first; hands content objects to the verifier."""

    def __init__(self, storage, manifest, workdir, objects, report):
        self.storage = storage
        self.manifest = manifest
        self.workdir = workdir
        self.objects = objects
        self.report = report

    def catalog(self, content_hash, size, mount_path):
        """Check the catalog mounted at ``mount_path`` and those below it; returns its statistics (all 24
        counters) or None if it has not all of them."""
        kind = "root catalog" if mount_path == "" else "nested catalog {}".format(mount_path)
        what = "{} ({})".format(kind, content_hash.object_path(SUFFIX_CATALOG))
        filename = os.path.join(self.workdir, content_hash.hex() + ".db")
        out = open(filename, "wb")
        try:
            with out:
                stored = verify_object(self.storage.root, content_hash, SUFFIX_CATALOG, ZLIB, what,
                                       expected_size=size or None, sink=out.write)
            summary = check_catalog(filename, mount_path, self.manifest.revision, what, self.objects.add)
        finally:
            os.unlink(filename)  # catalogs can be large: keep only the one being checked
        self.report.count(stored)
        self.report.catalogs += 1
        self.report.entries += summary.entries
        self.report.external_files += summary.external_files
        children = [self.catalog(ref.hash, ref.size, ref.path) for ref in summary.nested]
        if (summary.statistics is not None and summary.schema_revision >= STATISTICS_REQUIRED_SINCE
                and all(child is not None for child in children)):
            check_subtree(summary.statistics, children, what)
        return summary.statistics


class _ObjectVerifier:
    """Verifies each distinct object once in a thread pool, with a bounded number of objects in flight; results
    are collected in submission order, so the first problem reported does not depend on timing."""

    def __init__(self, root, report, workers):
        self._root = root
        self._report = report
        workers = workers or min(_MAX_WORKERS, max(2, os.cpu_count() or 1))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                           thread_name_prefix="cvmfs-pilot-check")
        self._window = workers * _IN_FLIGHT_PER_WORKER
        self._in_flight = deque()
        self._expected = {}  # (hash, suffix) -> (size, compression, description) of its first reference

    def add(self, content_hash, suffix, size, compression, description):
        key = (content_hash, suffix)
        known = self._expected.get(key)
        if known is not None:
            if known[:2] != (size, compression):
                raise PublishError(
                    "object {} is referenced as {} bytes ({}) by {} and as {} bytes ({}) by {}; one of the catalog "
                    "entries is wrong".format(content_hash.object_path(suffix), known[0], COMPRESSION_NAMES[known[1]],
                                              known[2], size, COMPRESSION_NAMES[compression], description))
            return
        self._expected[key] = (size, compression, description)
        self._in_flight.append(self._pool.submit(verify_object, self._root, content_hash, suffix, compression,
                                                 description, expected_size=size))
        while len(self._in_flight) > self._window:
            self._report.count(self._in_flight.popleft().result())

    def finish(self):
        while self._in_flight:
            self._report.count(self._in_flight.popleft().result())

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
