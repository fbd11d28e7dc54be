"""Opening a repository from the client configuration: the config repository first, then the chain of
configuration files, servers and proxies, the shared cache, the trust anchors, and the first trusted revision."""

import errno
import glob
import logging
import os
import time
import urllib.request

from cvmfs_pilot.cvmfs.compression import ZLIB
from cvmfs_pilot.cvmfs.hashing import SUFFIX_CERTIFICATE
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.der import DerError
from cvmfs_pilot.cvmfs.signature import load_public_keys

from .cache import Cache, cache_directory
from .config import DEFAULT_CONFIG_DIR, config_repository_name, load_configuration
from .download import DownloadError, DownloadOptions, Downloader
from .objects import ObjectFetcher
from .proxies import DEFAULT_PAC_URLS, proxy_groups
from .repository import Repository, RepositoryError, Revision, new_tree
from .trust import MAX_SIGNED_FILE, Blacklist, TrustError, verify_revision

log = logging.getLogger(__name__)

DEFAULT_CACHE_BASE = "/var/lib/cvmfs"
DEFAULT_QUOTA_MB = 4000
MAX_PAC_FILE = 1024 * 1024


class SetupError(RepositoryError):
    """The configuration does not allow opening the repository; the message says which setting to fix."""

    def __init__(self, message):
        RepositoryError.__init__(self, errno.EINVAL, message)


def _fetch_pac(url):
    with urllib.request.urlopen(url, timeout=5) as response:  # PAC files come DIRECT, as with the real client
        return response.read(MAX_PAC_FILE)


def _master_keys(config, config_dir):
    listed = config.get("CVMFS_PUBLIC_KEY")
    if listed:
        files = [f for f in listed.split(":") if f]
        where = "CVMFS_PUBLIC_KEY ({})".format(config.origin("CVMFS_PUBLIC_KEY"))
    else:
        keys_dir = config.get("CVMFS_KEYS_DIR") or os.path.join(config_dir, "keys")
        files = sorted(glob.glob(os.path.join(keys_dir, "*.pub")))
        where = "CVMFS_KEYS_DIR {}".format(keys_dir)
    keys = []
    for name in files:
        try:
            with open(name, "rb") as f:
                keys += load_public_keys(f.read())
        except OSError as exc:
            raise SetupError("cannot read master public key {} named by {}: {}".format(name, where, exc.strerror))
        except (DerError, ValueError) as exc:
            raise SetupError("master public key {} named by {} is not a usable RSA public key: {}".format(
                name, where, exc))
    if not keys:
        raise SetupError("no master public key found via {}; set CVMFS_PUBLIC_KEY or CVMFS_KEYS_DIR to the "
                         "repository's .pub file(s)".format(where))
    return keys


def _blacklist(config_dir, read_config_repository):
    texts = []
    try:
        with open(os.path.join(config_dir, "blacklist"), "rb") as f:
            texts.append(f.read().decode("utf-8", "replace"))
    except FileNotFoundError:
        pass
    if read_config_repository is not None:
        data = read_config_repository("etc/cvmfs/blacklist")
        if data:
            texts.append(data.decode("utf-8", "replace"))
    return Blacklist.parse(texts)


def _cache(config, fqrn):
    base = config.get("CVMFS_CACHE_BASE") or DEFAULT_CACHE_BASE
    quota_mb = config.get_int("CVMFS_QUOTA_LIMIT", DEFAULT_QUOTA_MB)
    directory = cache_directory(base, fqrn, shared=config.get_bool("CVMFS_SHARED_CACHE", True))
    try:
        return Cache(directory, quota_limit_bytes=None if quota_mb < 0 else max(quota_mb, 1) * 1024 * 1024)
    except OSError as exc:
        raise SetupError("cannot use the cache directory {} ({}); set CVMFS_CACHE_BASE to a writable local "
                         "directory".format(directory, exc.strerror or exc))


def _downloader(config, fqrn):
    servers = [s for s in (config.get("CVMFS_SERVER_URL") or "").split(";") if s.strip()]
    if not servers:
        raise SetupError("CVMFS_SERVER_URL is not set for {}; configure the repository's stratum servers".format(
            fqrn))
    http_proxy = config.get("CVMFS_HTTP_PROXY")
    if not http_proxy:
        raise SetupError("CVMFS_HTTP_PROXY is not set for {}; name the site's squid proxies, or DIRECT for none"
                         .format(fqrn))
    try:
        groups = proxy_groups(http_proxy, config.get("CVMFS_FALLBACK_PROXY") or "",
                              config.get("CVMFS_PAC_URLS") or DEFAULT_PAC_URLS, _fetch_pac)
        return Downloader(servers, groups, fqrn, DownloadOptions.from_config(config))
    except ValueError as exc:
        raise SetupError(str(exc))


class RevisionLoader(object):
    """Fetches and verifies the newest revision; falls back to the last verified one in the cache when no
    server answers."""

    def __init__(self, fqrn, objects, master_keys, blacklist, clock=time.monotonic):
        self.fqrn = fqrn
        self.objects = objects
        self.master_keys = master_keys
        self.blacklist = blacklist
        self.clock = clock
        self.offline = False

    def _certificate(self, content_hash):
        with self.objects.open(content_hash, SUFFIX_CERTIFICATE, ZLIB) as f:
            return f.read()

    def __call__(self, previous):
        cache = self.objects.cache
        breadcrumb = cache.read_breadcrumb(self.fqrn)
        downloader = self.objects.downloader
        try:
            manifest_bytes = downloader.fetch_bytes(".cvmfspublished", MAX_SIGNED_FILE)
            whitelist_bytes = downloader.fetch_bytes(".cvmfswhitelist", MAX_SIGNED_FILE)
        except DownloadError as exc:
            return self._offline(previous, breadcrumb, exc)
        try:
            trusted = verify_revision(self.fqrn, manifest_bytes, whitelist_bytes, self._certificate,
                                      self.master_keys, self.blacklist, breadcrumb)
        except TrustError as exc:
            raise RepositoryError(errno.EACCES, str(exc))
        self.offline = False
        manifest = trusted.manifest
        if previous is not None and manifest.revision <= previous.manifest.revision:
            previous.fetched_at = self.clock()
            return previous
        tree = new_tree(self.objects, manifest)
        cache.write_breadcrumb(self.fqrn, manifest.root_catalog, manifest.timestamp or 0, manifest.revision)
        return Revision(manifest, tree, self.clock())

    def _offline(self, previous, breadcrumb, error):
        if previous is not None:
            log.warning("%s: no server answered; staying on revision %d (%s)", self.fqrn,
                        previous.manifest.revision, error)
            previous.fetched_at = self.clock()
            return previous
        cached_root = self.objects.cache.open(breadcrumb[0]) if breadcrumb is not None else None
        if cached_root is None:
            raise RepositoryError(errno.EIO, "{}: {}".format(self.fqrn, error))
        cached_root.close()
        root, timestamp, revision = breadcrumb
        log.warning("%s: no server answered; using revision %d from the local cache (%s)", self.fqrn, revision,
                    error)
        self.offline = True
        manifest = Manifest(root_catalog=root, root_catalog_size=0, revision=revision, fqrn=self.fqrn,
                            timestamp=timestamp)
        return Revision(manifest, new_tree(self.objects, manifest), self.clock())


def open_repository(fqrn, config_dir=DEFAULT_CONFIG_DIR, overrides=None, environ=None):
    """Open ``fqrn`` as the configuration in ``config_dir`` (and ``-o`` ``overrides``) describes it."""
    environ = dict(os.environ if environ is None else environ)
    config_repository = config_repository_name(config_dir, overrides, environ)
    config_repo = reader = None
    if config_repository and config_repository != fqrn:
        config_repo = open_repository(config_repository, config_dir, overrides, environ)
        reader = _file_reader(config_repo)
    try:
        config = load_configuration(fqrn, config_dir, overrides, environ, reader)
        blacklist = _blacklist(config_dir, reader)
    finally:
        if config_repo is not None:
            config_repo.close()
    for warning in config.warnings:
        log.warning("%s", warning)
    objects = ObjectFetcher(_cache(config, fqrn), _downloader(config, fqrn))
    loader = RevisionLoader(fqrn, objects, _master_keys(config, config_dir), blacklist)
    claim = config.get_bool("CVMFS_CLAIM_OWNERSHIP", True)
    return Repository(fqrn, objects, loader, environ, os.getuid() if claim else None,
                      os.getgid() if claim else None, raw_symlinks=config.get_bool("CVMFS_RAW_SYMLINKS", False),
                      config=config, config_repository=config_repository)


def _file_reader(repository):
    def read(relative_path):
        try:
            return repository.read("/" + relative_path)
        except RepositoryError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    return read
