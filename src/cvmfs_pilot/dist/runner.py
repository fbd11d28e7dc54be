"""Building and updating the distributions of a staging area: the work behind ``dist build`` and ``dist update``.

One run goes through every requested distribution:

1. fetch repomd.xml of every repository any of them uses;
2. a distribution whose definitions are unchanged and whose repositories' package lists have the checksums
   recorded when it was made is unchanged, without reading further (this makes a no-op update quick);
3. for the others, fetch the package lists, choose the packages (resolve.py) and name the result; a name equal
   to the staged one means unchanged;
4. build the rest in parallel, each package downloaded once however many distributions use it;
5. write the index (if anything changed), retire and prune old files, record the state.

A distribution that fails is reported and keeps its previous version in the index; the others go on.
"""

import concurrent.futures
import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

from .builder import BUILDER, build, describe, description_bytes, distribution_name
from .errors import DistError, StagingError
from .fetch import Fetcher
from .repodata import REPOMD_PATH, parse_repomd, read_primary
from .resolve import definition_digest, resolve, wanted
from cvmfs_pilot.node.safe_extract import ArchiveRejected
from .staging import IndexEntry, Staging, utc_iso
from .upstream import CVMFS2, PYTHON, PYTHON_TARGET, DistKey, Target, Upstream
from .zipapp_engine import build_zipapp

BUILT = "built"
UNCHANGED = "unchanged"
FAILED = "failed"
SKIPPED = "skipped"
REPOMD_LIMIT = 4 << 20
DEFAULT_GRACE_HOURS = 168.0  # a week: pilots may wait that long in a batch queue before they start
IO_WORKERS = 8
BUILD_WORKERS = min(8, (os.cpu_count() or 2) + 2)
KEY_ERRORS = (DistError, ArchiveRejected, OSError)


@dataclass(frozen=True)
class Request:
    """What a build asks for; recorded in the staging area, so that ``dist update`` repeats it."""

    sources: tuple
    targets: tuple  # of "platform-arch" strings
    upstream: object = None  # path of the definitions file; None for the shipped one
    cvmfs_version: object = None
    grace_hours: float = DEFAULT_GRACE_HOURS

    def as_state(self):
        return {"sources": list(self.sources), "targets": list(self.targets), "upstream": self.upstream,
                "cvmfs_version": self.cvmfs_version, "grace_hours": self.grace_hours}

    @classmethod
    def from_state(cls, state):
        return cls(tuple(state["sources"]), tuple(state["targets"]), state.get("upstream"),
                   state.get("cvmfs_version"), float(state.get("grace_hours", DEFAULT_GRACE_HOURS)))


@dataclass
class Outcome:
    key: DistKey
    status: str
    name: str = ""
    version: str = ""
    size: int = 0
    seconds: float = 0.0
    message: str = ""


@dataclass
class Report:
    outcomes: list
    seconds: float = 0.0
    downloaded: int = 0  # bytes fetched from repositories
    written: int = 0  # bytes of the tarballs built
    index_sha256: str = ""
    deleted: list = field(default_factory=list)

    @property
    def failed(self):
        return any(outcome.status == FAILED for outcome in self.outcomes)


class Reporter:
    """Progress of a run; this one reports nothing. The CLI's reporters override what they show."""

    def stage(self, text):
        pass

    def start(self, key, total_bytes):
        pass

    def step(self, key, text):
        pass

    def advance(self, key, nbytes):
        pass

    def finish(self, outcome):
        pass


def requested_keys(upstream, request):
    """(keys to build, skipped Outcomes) for a request; DistError for names the definitions do not know."""
    unknown = [source for source in request.sources if source not in upstream.sources]
    if unknown:
        raise DistError("unknown source(s) {}; the upstream definitions {} offer {}".format(
            ", ".join(unknown), upstream.path, ", ".join(sorted(upstream.sources))))
    targets = [Target.parse(text) for text in request.targets]
    unknown = sorted({t.platform for t in targets} - set(upstream.platforms))
    if unknown:
        raise DistError("unknown platform(s) {}; the upstream definitions {} offer {}".format(
            ", ".join(unknown), upstream.path, ", ".join(sorted(upstream.platforms))))
    keys, skipped = [], []
    for source in dict.fromkeys(request.sources):
        for target in dict.fromkeys(targets):
            key = DistKey(CVMFS2, source, target.platform, target.arch)
            if upstream.offers(source, target):
                keys.append(key)
            else:
                skipped.append(Outcome(key, SKIPPED, message="{} offers no {} client".format(source, target)))
        keys.append(DistKey(PYTHON, source, PYTHON_TARGET.platform, PYTHON_TARGET.arch))
    return keys, skipped


def build_staging(directory, request, reporter=None, fetcher=None):
    """Build what request asks for into the staging area at directory, replacing the previous request."""
    return _Run(Staging(directory), request, reporter or Reporter(), fetcher or Fetcher()).run()


def update_staging(directory, reporter=None, fetcher=None):
    """Repeat the recorded request of the staging area at directory, rebuilding only what changed upstream."""
    staging = Staging(directory)
    state = staging.read_state()
    if not state:
        raise StagingError("{} has no {}: nothing was built there yet; run 'cvmfs-pilot dist build' "
                           "first".format(directory, "build-state.json"))
    return _Run(staging, Request.from_state(state["request"]), reporter or Reporter(), fetcher or Fetcher()).run()


class _PackageStore:
    """Downloads each package file once per run, whichever build asks first; the others wait for it."""

    def __init__(self, directory, fetcher):
        self._directory = directory
        self._fetcher = fetcher
        self._lock = threading.Lock()
        self._files = {}  # checksum -> Future of the path

    def get(self, package, progress):
        """The path of the downloaded package, and whether this call downloaded it."""
        with self._lock:
            future = self._files.get(package.checksum)
            owner = future is None
            if owner:
                future = self._files[package.checksum] = concurrent.futures.Future()
        if owner:
            path = os.path.join(self._directory, package.checksum.hex + ".rpm")
            try:
                self._fetcher.download(package.url, path, package.checksum, package.size, progress)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(path)
        return future.result(), owner


class _Run:
    """One build or update. ``inputs`` maps each distribution key (as a string) to what it was last made from:
    the digest of its definitions, the checksums of its repositories' package lists, and its name."""

    def __init__(self, staging, request, reporter, fetcher):
        self.staging = staging
        self.request = request
        self.reporter = reporter
        self.fetcher = fetcher
        self._count_lock = threading.Lock()
        self.downloaded = 0
        # set by run(), under the staging area's lock
        self.upstream = self.index = self.inputs = self.outcomes = self.work = None
        self.zipapp = self.zipapp_sha256 = self.needs = self.digests = None

    def _counting(self, key=None):
        def progress(nbytes):
            with self._count_lock:
                self.downloaded += nbytes
            if key is not None:
                self.reporter.advance(key, nbytes)
        return progress

    def run(self):
        started = time.monotonic()
        self.upstream = Upstream.load(self.request.upstream)
        keys, skipped = requested_keys(self.upstream, self.request)
        with self.staging.locked():
            self.index = {entry.key: entry for entry in self.staging.read_index()}
            state = self.staging.read_state()
            self.inputs = dict(state.get("inputs", {}))
            self.outcomes = {}
            self.work = str(self.staging.work_directory())
            try:
                entries = self._build_all(keys)
            finally:
                shutil.rmtree(self.work, ignore_errors=True)
            now = time.time()
            index_sha256 = self.staging.publish_index(entries, now)
            retired = dict(state.get("retired", {}))
            deleted = self.staging.retire_and_prune(entries, retired, self.request.grace_hours * 3600, now)
            self.staging.write_state({"request": self.request.as_state(), "retired": retired,
                                      "inputs": {str(key): self.inputs[str(key)] for key in keys
                                                 if str(key) in self.inputs}})
        for outcome in skipped:
            self.reporter.finish(outcome)
        outcomes = list(self.outcomes.values())
        return Report(outcomes=sorted(outcomes + skipped, key=lambda o: o.key), seconds=time.monotonic() - started,
                      downloaded=self.downloaded,
                      written=sum(o.size for o in outcomes if o.status == BUILT), index_sha256=index_sha256,
                      deleted=deleted)

    def _build_all(self, keys):
        """Give every key an outcome; returns the entries of the new index."""
        self.zipapp = build_zipapp() if any(key.engine == PYTHON for key in keys) else None
        self.zipapp_sha256 = hashlib.sha256(self.zipapp).hexdigest() if self.zipapp else None
        self.needs = {key: wanted(self.upstream, key) for key in keys}
        self.digests = {key: definition_digest(self.upstream, key, {
            "builder": BUILDER,
            "cvmfs_version": self.request.cvmfs_version if key.engine == CVMFS2 else None,
            "zipapp_sha256": self.zipapp_sha256 if key.engine == PYTHON else None}) for key in keys}
        repomds, pending = self._check_repositories(keys)
        to_build = self._resolve(pending, repomds)
        entries = {key: self.index[key] for key in keys if key in self.index}
        entries.update(self._build(to_build))
        return list(entries.values())

    def _check_repositories(self, keys):
        """Read every repomd.xml; ({url: primary MetadataFile or exception}, [(key, its package list
        checksums)] of the keys that need resolving): the others are unchanged or failed."""
        urls = sorted({url for need in self.needs.values() for url in need})
        self.reporter.stage("reading the metadata of {} repositories".format(len(urls)))
        repomds = dict(zip(urls, self._parallel(IO_WORKERS, urls, self._repomd)))
        pending = []
        for key in keys:
            error = next((repomds[url] for url in self.needs[key] if isinstance(repomds[url], Exception)), None)
            if error:
                self._failed(key, error)
                continue
            repodata = {url: str(repomds[url].checksum) for url in self.needs[key]}
            if key in self.index and self.inputs.get(str(key)) == {
                    "definition": self.digests[key], "repodata": repodata, "name": self.index[key].name}:
                self._unchanged(key)
            else:
                pending.append((key, repodata))
        return repomds, pending

    def _resolve(self, pending, repomds):
        """Read the package lists the pending keys need and choose their packages; returns [(plan,
        description, name, inputs)] of those whose name differs from the staged one."""
        urls = sorted({url for key, _ in pending for url in self.needs[key]})
        if urls:
            self.reporter.stage("reading the package lists of {} repositories".format(len(urls)))
        names = {url: set().union(*(self.needs[key].get(url, set()) for key, _ in pending)) for url in urls}
        directory = os.path.join(self.work, "repodata")
        os.mkdir(directory)
        catalogs = dict(zip(urls, self._parallel(IO_WORKERS, urls, lambda url: self._catalog(
            url, repomds[url], names[url], directory))))
        to_build = []
        for key, repodata in pending:
            error = next((catalogs[url] for url in self.needs[key] if isinstance(catalogs[url], Exception)), None)
            try:
                if error:
                    raise error
                plan = resolve(self.upstream, key, catalogs, self.request.cvmfs_version)
            except KEY_ERRORS as exc:
                self._failed(key, exc)
                continue
            description = describe(plan, self.zipapp_sha256)
            name = distribution_name(description)
            inputs = {"definition": self.digests[key], "repodata": repodata, "name": name}
            if key in self.index and self.index[key].name == name:
                self.inputs[str(key)] = inputs
                self._unchanged(key)
            else:
                to_build.append((plan, description, name, inputs))
        return to_build

    def _build(self, to_build):
        """Build in parallel; returns {key: IndexEntry} of those built."""
        if not to_build:
            return {}
        self.reporter.stage("building {} distributions".format(len(to_build)))
        os.mkdir(os.path.join(self.work, "packages"))
        store = _PackageStore(os.path.join(self.work, "packages"), self.fetcher)
        results = self._parallel(BUILD_WORKERS, to_build, lambda item: self._build_one(item, store))
        entries = {}
        for (plan, _, _, inputs), result in zip(to_build, results):
            if isinstance(result, Exception):
                self._failed(plan.key, result)
            else:
                entries[plan.key] = result
                self.inputs[str(plan.key)] = inputs
        return entries

    def _parallel(self, workers, items, function):
        """[function(item) or the exception it raised (KEY_ERRORS only) for each item], on a thread pool."""
        def guarded(item):
            try:
                return function(item)
            except KEY_ERRORS as exc:
                return exc
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(guarded, items))

    def _repomd(self, url):
        data = self.fetcher.read(url + REPOMD_PATH, REPOMD_LIMIT)
        self._counting()(len(data))
        return parse_repomd(data, url + REPOMD_PATH)

    def _catalog(self, url, repomd, names, directory):
        path = os.path.join(directory, hashlib.sha256(url.encode()).hexdigest())
        self.fetcher.download(urljoin(url, repomd.location), path, repomd.checksum, repomd.size, self._counting())
        return read_primary(path, url, names)

    def _build_one(self, item, store):
        plan, description, name, _ = item
        key = plan.key
        started = time.monotonic()
        self.reporter.start(key, sum(package.size for package in plan.packages))
        self.reporter.step(key, "downloading")
        progress = self._counting(key)
        files = []
        for package in plan.packages:
            path, downloaded = store.get(package, progress)
            if not downloaded:  # another build fetched it
                self.reporter.advance(key, package.size)
            files.append(path)
        directory = os.path.join(self.work, str(key))
        os.mkdir(directory)
        try:
            tarball, packed = build(plan, description, files, self.zipapp, directory,
                                    lambda text: self.reporter.step(key, text))
            self.staging.add_distribution(name, tarball, description_bytes(description))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        outcome = Outcome(key, BUILT, name, plan.version, packed.size, time.monotonic() - started)
        self.outcomes[key] = outcome
        self.reporter.finish(outcome)
        return IndexEntry(name=name, engine=key.engine, source=key.source, platform=key.platform, arch=key.arch,
                          version=plan.version, size=packed.size, sha256=packed.sha256,
                          build_time=utc_iso(time.time()))

    def _unchanged(self, key):
        entry = self.index[key]
        self.outcomes[key] = Outcome(key, UNCHANGED, entry.name, entry.version, entry.size)
        self.reporter.finish(self.outcomes[key])

    def _failed(self, key, exc):
        kept = self.index.get(key)
        message = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename:
            message = "{}: {}".format(exc.filename, exc.strerror)
        if kept is not None:
            message += " (the index keeps {})".format(kept.name)
        self.outcomes[key] = Outcome(key, FAILED, kept.name if kept else "", kept.version if kept else "",
                                     message=message)
        self.reporter.finish(self.outcomes[key])
