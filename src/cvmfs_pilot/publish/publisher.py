"""``repo publish``: turn a directory tree into the next revision of a repository, atomically.

Order of a publish: lock the storage; build and store every catalog (with all file objects); store certificate,
history and meta-info; flush everything to disk; renew the whitelist if needed; replace the manifest last. An error
at any step before the last leaves the previous revision served as it was.
"""

import concurrent.futures
import datetime
import json
import multiprocessing
import os
import shutil
import tempfile
import time

from cvmfs_pilot.cvmfs.compression import ZLIB, compress
from cvmfs_pilot.cvmfs.hashing import SUFFIX_CERTIFICATE, SUFFIX_METAINFO, ContentHash
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import Certificate
from cvmfs_pilot.cvmfs.whitelist import Whitelist

from .errors import PublishError
from .history_writer import write_history
from .ingest import IngestSettings
from .keys import KeySet, sign_manifest, sign_whitelist
from .previous import PreviousRevision
from .storage import JOURNAL_PREFIX, MANIFEST, MASTER_REPLICA, WHITELIST, Storage, describe_os_error
from .tree_builder import TreeBuilder

DEFAULT_TTL = 240
DEFAULT_WHITELIST_DAYS = 30
WHITELIST_RENEW_DAYS = 7  # a publish renews a whitelist that expires sooner than this


class PublishOptions:
    def __init__(self, algorithm, compression, chunk_sizes, ttl=DEFAULT_TTL,
                 whitelist_days=DEFAULT_WHITELIST_DAYS, meta_info=None, workers=None):
        self.algorithm = algorithm
        self.compression = compression
        self.chunk_sizes = chunk_sizes
        self.ttl = ttl
        self.whitelist_days = whitelist_days
        self.meta_info = meta_info  # path of a JSON file, or None to keep the previous one
        self.workers = workers or os.cpu_count() or 1


class PublishReport:
    def __init__(self, fqrn, manifest, stats, seconds):
        self.fqrn = fqrn
        self.manifest = manifest
        self.stats = stats
        self.seconds = seconds

    def summary(self):
        s = self.stats
        return ("published {} revision {} (root catalog {}): {} files, {:.1f} MB; read {} files ({:.1f} MB), "
                "stored {} new objects ({:.1f} MB); {} catalogs ({} unchanged) in {:.2f} s".format(
                    self.fqrn, self.manifest.revision, self.manifest.root_catalog.hex(), s.files, s.bytes / 1e6,
                    s.files_ingested, s.bytes_ingested / 1e6, s.objects_stored, s.bytes_stored / 1e6,
                    s.catalogs, s.catalogs_reused, self.seconds))


def check_storage_belongs(storage, fqrn):
    """Refuse a storage directory that holds another repository or unrelated files; returns the manifest of the
    current revision, or None for a new repository."""
    if storage.root.exists() and not storage.root.is_dir():
        raise PublishError("storage {} exists and is not a directory".format(storage.root))
    manifest = storage.read_manifest()
    if manifest is not None:
        if manifest.fqrn != fqrn:
            raise PublishError("storage {} holds repository {!r}, not {!r}; use another storage directory".format(
                storage.root, manifest.fqrn, fqrn))
        return manifest
    whitelist = storage.read_signed(WHITELIST)
    if whitelist is not None:
        try:
            other = Whitelist.parse(whitelist).fqrn
        except ValueError:
            other = None
        if other != fqrn:
            raise PublishError("storage {} holds a whitelist of repository {!r}, not {!r}".format(
                storage.root, other, fqrn))
    if storage.root.exists():
        foreign = sorted(p.name for p in storage.root.iterdir()
                         if p.name != "data" and not p.name.startswith(".cvmfs"))
        if foreign:
            raise PublishError("storage {} is not empty and is not a repository (it contains {}); publish into "
                               "an empty or new directory".format(storage.root, ", ".join(foreign[:5])))
    return None


def _store_compressed(storage, data, suffix, algorithm):
    stored = compress(data, ZLIB)
    content_hash = ContentHash.of(stored, algorithm)
    storage.put(content_hash, suffix, stored)
    return content_hash


def _meta_info(storage, path, algorithm):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PublishError("cannot read meta-info file {}: {}".format(path, exc.strerror))
    try:
        json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PublishError("meta-info file {} is not valid JSON: {}".format(path, exc))
    return _store_compressed(storage, data, SUFFIX_METAINFO, algorithm)


def renew_whitelist_if_needed(storage, keys, fqrn, algorithm, days, now):
    """Write a new whitelist when there is none, it expires within WHITELIST_RENEW_DAYS, or it does not list the
    signing certificate. Needs the master key then."""
    fingerprint = Certificate.from_pem(keys.certificate_pem).fingerprint(algorithm)
    current = storage.read_signed(WHITELIST)
    fingerprints = [fingerprint]
    if current is not None:
        try:
            whitelist = Whitelist.parse(current, expected_fqrn=fqrn)
        except ValueError:
            whitelist = None
        if whitelist is not None:
            soon = datetime.datetime.utcfromtimestamp(now) + datetime.timedelta(days=WHITELIST_RENEW_DAYS)
            if whitelist.lists(fingerprint) and not whitelist.is_expired(soon):
                return False
            fingerprints += [fp for fp in whitelist.fingerprints if fp != fingerprint]
    if keys.master_key is None:
        raise PublishError("the whitelist of {} must be renewed (missing, expiring or not listing the "
                           "certificate), but {}.masterkey is not in the keys directory".format(fqrn, fqrn))
    data = sign_whitelist(fqrn, fingerprints, keys.master_key, days=days, algorithm=algorithm,
                          now=datetime.datetime.utcfromtimestamp(now))
    storage.replace_signed(WHITELIST, data)
    return True


def publish(source, storage_dir, fqrn, keys_dir, options, now=None):
    """Publish ``source`` as the next revision of ``fqrn`` in ``storage_dir``; returns a PublishReport."""
    started = time.monotonic()
    if not os.path.isdir(source):
        raise PublishError("source {} is not a directory".format(source))
    keys = KeySet.load(keys_dir, fqrn)
    storage = Storage(storage_dir)
    manifest = check_storage_belongs(storage, fqrn)
    storage.create_layout()
    storage.lock()
    try:
        manifest = storage.read_manifest(expected_fqrn=fqrn) if storage.exists() else None  # under the lock
        storage.clean_txn()
        now = time.time() if now is None else now
        revision = manifest.revision + 1 if manifest else 1
        timestamp = max(int(now), manifest.timestamp + 1 if manifest and manifest.timestamp else 0)
        workdir = tempfile.mkdtemp(prefix="publish-", dir=str(storage.txn))
        try:
            with open(os.path.join(workdir, JOURNAL_PREFIX + "main"), "a", encoding="ascii") as journal:
                storage.journal = journal
                new_manifest, stats = _build(source, storage, fqrn, keys, options, manifest, revision,
                                             timestamp, workdir)
                storage.journal = None
        except BaseException:
            storage.journal = None
            storage.remove_journaled_objects(workdir)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # journals go before the manifest names their objects
        try:
            os.sync()  # every object the manifest names is durable before the manifest exists
            renew_whitelist_if_needed(storage, keys, fqrn, options.algorithm, options.whitelist_days, now)
            (storage.root / MASTER_REPLICA).touch()
            storage.replace_signed(MANIFEST, sign_manifest(new_manifest.body(), options.algorithm,
                                                           keys.signing_key))
        except OSError as exc:
            raise describe_os_error(exc, "cannot write the new manifest of {}".format(fqrn))
    finally:
        storage.unlock()
    return PublishReport(fqrn, new_manifest, stats, time.monotonic() - started)


def _build(source, storage, fqrn, keys, options, manifest, revision, timestamp, workdir):
    settings = IngestSettings(storage.root, options.algorithm, options.compression, options.chunk_sizes, workdir)
    previous = PreviousRevision(storage, manifest, workdir) if manifest else None
    context = multiprocessing.get_context("fork")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=options.workers, mp_context=context)
    try:
        builder = TreeBuilder(source, storage, settings, pool, previous, revision, timestamp, options.ttl,
                              workdir)
        root_hash, root_size, _ = builder.build()
        certificate = _store_compressed(storage, keys.certificate_pem, SUFFIX_CERTIFICATE, options.algorithm)
        history = write_history(storage, manifest.history if manifest else None, fqrn, root_hash, root_size,
                                revision, timestamp, options.algorithm, workdir)
        if options.meta_info is not None:
            meta_info = _meta_info(storage, options.meta_info, options.algorithm)
        else:
            meta_info = manifest.meta_info if manifest else None
    except OSError as exc:
        raise describe_os_error(exc, "publishing {} failed".format(fqrn))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is not None:
            previous.close()
    new_manifest = Manifest(root_catalog=root_hash, root_catalog_size=root_size, revision=revision,
                            ttl=options.ttl, fqrn=fqrn, certificate=certificate, history=history,
                            timestamp=timestamp, meta_info=meta_info)
    return new_manifest, builder.stats
