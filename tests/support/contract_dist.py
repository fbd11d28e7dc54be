"""A staging area whose cvmfs2-engine distribution runs OUR engine behind the upstream ``cvmfs2`` command line.

The node layer runs a cvmfs2 distribution's ``usr/bin/cvmfs2`` as
``LD_LIBRARY_PATH=<dist>/usr/lib64:<dist>/usr/lib <dist>/usr/bin/cvmfs2 -o config=FILE[:FILE...][,debug] FQRN
MOUNTPOINT``. The upstream binary cannot run on this Debian machine, so the ``cvmfs`` stand-in RPM made here
carries, in place of upstream's cvmfs2, a POSIX sh script (:data:`CVMFS2_SCRIPT`) that execs
``python3 <dist>/usr/libexec/cvmfs-pilot/cvmfs-pilot.pyz fs mount "$@"``, and that zipapp, built from the
working tree by the project's own builder (``cvmfs_pilot.dist.zipapp_engine.build_zipapp``). The rest of the
stand-in layout (libraries, ``/etc/cvmfs/default.conf`` ...) is that of support/yum.py.

:func:`build_contract_staging` makes a local yum mirror of just the repositories one distribution needs (cvmfs2,
source ``none``, el9, x86_64: the cvmfs repository and the fuse3-libs one), then runs the real builder
(``python -m cvmfs_pilot dist build``) against it through file:// URLs (or a web server, see ``serve``).
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvmfs_pilot.dist.resolve import package_target, wanted
from cvmfs_pilot.dist.upstream import CVMFS2, PYTHON, PYTHON_TARGET, DistKey, Target, Upstream
from cvmfs_pilot.dist.zipapp_engine import build_zipapp
from support.yum import (COMPRESSOR, CVMFS_VERSIONS, OTHER_VERSIONS, REPODATA_COMPRESSION, build_rpms, create_repo,
                         local_directory, mirrored_definitions, stand_in)

PLATFORM = "el9"
ARCH = "x86_64"  # Debian 12 (this machine) borrows el9 x86_64 builds
PREFERRED_SOURCES = ("none", "default", "egi", "osg")  # cheapest first: none brings no configuration RPM
CVMFS_VERSION = CVMFS_VERSIONS[-1]
CVMFS_RELEASE = "1"
PYZ = "/usr/libexec/cvmfs-pilot/cvmfs-pilot.pyz"  # in the cvmfs stand-in RPM, and so in the distribution
BUILD_TIMEOUT = 300

# Runs our engine under cvmfs2's command-line contract. $0 is resolved (through PATH lookup and symbolic
# links) to the script's real directory, so the zipapp is found wherever the distribution was unpacked.
# CVMFS_PILOT_PYTHON chooses the interpreter (default: python3 from PATH).
CVMFS2_SCRIPT = """\
#!/bin/sh
# cvmfs2 stand-in for tests (tests/support/contract_dist.py): cvmfs-pilot's engine under the cvmfs2 contract,
#   cvmfs2 [-f] [-o config=FILE[:FILE...][,debug]] FQRN MOUNTPOINT
# runs  python3 <dist>/usr/libexec/cvmfs-pilot/cvmfs-pilot.pyz fs mount [-f] [-o ...] FQRN MOUNTPOINT
self=$0
case $self in
    */*) ;;
    *) self=$(command -v -- "$self") || { echo "cvmfs2: cannot find myself ($0)" >&2; exit 127; } ;;
esac
if resolved=$(readlink -f -- "$self" 2>/dev/null) && [ -n "$resolved" ]; then
    self=$resolved
fi
here=$(cd -P -- "$(dirname -- "$self")" && pwd -P) || { echo "cvmfs2: cannot enter the directory of $self" >&2; exit 1; }
pyz=$here/../libexec/cvmfs-pilot/cvmfs-pilot.pyz
if [ ! -f "$pyz" ]; then
    echo "cvmfs2: $pyz is missing" >&2
    exit 1
fi
exec "${CVMFS_PILOT_PYTHON:-python3}" "$pyz" fs mount "$@"
"""


@dataclass(frozen=True)
class ContractStaging:
    """A built staging area. ``entry`` is the cvmfs2 distribution's index entry (a dict: name, engine, source,
    platform, arch, version, size, sha256, build_time); ``zipapp`` the bytes of the cvmfs-pilot.pyz inside it."""

    directory: Path  # the staging area: index.json, index.json.sha256, <name>.tar.gz ...
    index_sha256: str  # as index.json.sha256 states it (and index.json hashes to)
    entry: dict
    zipapp: bytes
    mirror: Path  # the yum mirror it was built from
    upstream: Path  # the definitions file pointing at the mirror
    build_output: str  # what 'cvmfs-pilot dist build' printed

    @property
    def name(self):
        return self.entry["name"]

    @property
    def source(self):
        return self.entry["source"]

    @property
    def tarball(self):
        return self.directory / (self.entry["name"] + ".tar.gz")

    @property
    def file_url(self):
        """The staging area as a file:// base URL (with a final /), for dist_fetch.fetch."""
        return self.directory.as_uri() + "/"

    @property
    def index(self):
        return json.loads((self.directory / "index.json").read_bytes())


def contract_script():
    """The bytes of the cvmfs2 stand-in script."""
    return CVMFS2_SCRIPT.encode()


def contract_cvmfs_stand_in(version=CVMFS_VERSION, release=CVMFS_RELEASE, arch=ARCH, zipapp=None):
    """support.yum's ``cvmfs`` stand-in with /usr/bin/cvmfs2 running our engine and the zipapp at PYZ (built from
    the working tree unless given)."""
    package = stand_in("cvmfs", version, release, arch)
    package.files["/usr/bin/cvmfs2"] = contract_script()
    package.files[PYZ] = build_zipapp() if zipapp is None else zipapp
    package.modes[PYZ] = "0755"
    return package


def choose_source(upstream, target=Target(PLATFORM, ARCH)):
    """The cheapest source the definitions offer a cvmfs2 client of for target: none if offered."""
    for source in PREFERRED_SOURCES:
        if source in upstream.sources and upstream.offers(source, target):
            return source
    offered = sorted(s for s in upstream.sources if upstream.offers(s, target))
    if not offered:
        raise ValueError("{} offers no cvmfs2 client for {}".format(upstream.path, target))
    return offered[0]


def _cvmfs_package_names(upstream):
    return {spec.name for spec in upstream.client_packages if spec.match_cvmfs_version} | {"cvmfs"}


def _family(name):
    if name.startswith("cvmfs-config-"):
        return "config"
    if name.startswith("cvmfs") and name != "cvmfs-x509-helper":
        return "cvmfs"
    return "fuse" if "fuse" in name else "other"


def contract_packages(upstream, source, target=Target(PLATFORM, ARCH), zipapp=None):
    """{upstream repository URL: [StandIn]}: what `dist build --sources SOURCE --platforms TARGET` reads (the
    cvmfs2 distribution and the python one it always builds beside), every cvmfs package in CVMFS_VERSION."""
    cvmfs_names = _cvmfs_package_names(upstream)
    cvmfs = contract_cvmfs_stand_in(CVMFS_VERSION, CVMFS_RELEASE, target.arch, zipapp)
    packages = {}
    keys = [DistKey(CVMFS2, source, target.platform, target.arch),
            DistKey(PYTHON, source, PYTHON_TARGET.platform, PYTHON_TARGET.arch)]
    for key in keys:
        arch = package_target(upstream, key).arch
        for url, names in wanted(upstream, key).items():
            for name in names:
                if name == "cvmfs":
                    package = cvmfs
                elif name in cvmfs_names:
                    package = stand_in(name, CVMFS_VERSION, CVMFS_RELEASE, arch)
                else:
                    version, release = OTHER_VERSIONS.get(name, ("1.0", "1"))
                    package = stand_in(name, version, release, "noarch" if name.startswith("cvmfs-config-")
                                       else arch)
                packages.setdefault(url, {})[name] = package
    return {url: sorted(by_name.values(), key=lambda p: p.name) for url, by_name in packages.items()}


def _repodata_compression(upstream, url, target):
    for role in upstream.repositories:
        if upstream.repository_url(role, target) == url:
            return REPODATA_COMPRESSION.get(role, "gz")
    return "gz"


def build_contract_mirror(root, work, source, target=Target(PLATFORM, ARCH), zipapp=None):
    """Build the repositories of contract_packages below root (as support.yum lays a mirror out: <root>/<host>/
    <path>); work is rpmbuild's scratch space. Returns {upstream URL: directory}."""
    upstream = Upstream.load()
    needed = contract_packages(upstream, source, target, zipapp)
    groups = {}  # (family, version, release, arch) -> {name: StandIn}
    placements = {}  # group -> {repository directories}
    for url, packages in needed.items():
        for package in packages:
            group = (_family(package.name), package.version, package.release, package.arch)
            groups.setdefault(group, {})[package.name] = package
            placements.setdefault(group, set()).add(local_directory(root, url))
    work = Path(work)

    def build(group):
        digest = hashlib.sha256(json.dumps(group).encode()).hexdigest()[:16]
        built = build_rpms(list(groups[group].values()), work / "built" / digest, work / "rpmbuild" / digest,
                           COMPRESSOR[group[0]])
        for directory in placements[group]:
            directory.mkdir(parents=True, exist_ok=True)
            for path in built:
                shutil.copy(path, directory / path.name)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(build, sorted(groups)))
    directories = {url: local_directory(root, url) for url in needed}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda url: create_repo(directories[url], _repodata_compression(upstream, url, target)),
                      sorted(directories)))
    return directories


def run_dist_build(staging, upstream_file, source, target=Target(PLATFORM, ARCH)):
    """Run the real builder, ``python -m cvmfs_pilot dist build``; returns its output (RuntimeError if it
    fails)."""
    command = [sys.executable, "-m", "cvmfs_pilot", "dist", "build", "--staging", str(staging), "--upstream",
               str(upstream_file), "--sources", source, "--platforms", str(target)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=BUILD_TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError("{} failed (exit status {}):\n{}".format(" ".join(command), result.returncode,
                                                                    result.stdout))
    return result.stdout


def build_contract_staging(root, work, serve=None, source=None, zipapp=None):
    """Build the contract staging area at <root>/staging and return a ContractStaging.

    work: scratch space (the mirror, rpmbuild, the definitions file), which the caller may delete afterwards.
    serve: None to let the builder read the mirror through file:// URLs, or a function ``serve(directory) ->
    base_url`` (such as the ``nginx`` fixture) that serves the mirror during the build. source: default the
    cheapest the definitions offer for el9-x86_64 (none). zipapp: the pyz bytes (default: build_zipapp() of the
    working tree).
    """
    root, work = Path(root), Path(work)
    target = Target(PLATFORM, ARCH)
    source = source or choose_source(Upstream.load(), target)
    zipapp = build_zipapp() if zipapp is None else zipapp
    mirror = work / "mirror"
    mirror.mkdir(parents=True, exist_ok=True)
    build_contract_mirror(mirror, work / "rpmbuild", source, target, zipapp)
    base_url = serve(mirror) if serve is not None else mirror.as_uri()
    upstream_file = mirrored_definitions(base_url, work / "upstream.json")
    staging = root / "staging"
    root.mkdir(parents=True, exist_ok=True)
    output = run_dist_build(staging, upstream_file, source, target)

    index_bytes = (staging / "index.json").read_bytes()
    index_sha256 = (staging / "index.json.sha256").read_text().split()[0]
    if hashlib.sha256(index_bytes).hexdigest() != index_sha256:
        raise RuntimeError("{}: index.json does not match index.json.sha256".format(staging))
    entries = [e for e in json.loads(index_bytes)["distributions"]
               if (e["engine"], e["platform"], e["arch"]) == (CVMFS2, target.platform, target.arch)]
    if len(entries) != 1:
        raise RuntimeError("{}: expected one {} {} entry in index.json, found {}:\n{}".format(
            staging, CVMFS2, target, len(entries), output))
    return ContractStaging(staging, index_sha256, entries[0], zipapp, mirror, upstream_file, output)


def make_world_readable(path):
    """chmod -R a+rX path (symbolic links are left alone)."""
    def fix(name):
        mode = os.lstat(name).st_mode
        if stat.S_ISLNK(mode):
            return
        extra = 0o555 if stat.S_ISDIR(mode) or mode & 0o111 else 0o444
        os.chmod(name, stat.S_IMODE(mode) | extra)

    fix(path)
    for directory, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            fix(os.path.join(directory, name))


@pytest.fixture(scope="session")
def contract_staging():
    """A staging area (support.contract_dist.ContractStaging) built once per session by the real builder, whose
    cvmfs2 el9-x86_64 distribution runs our engine behind cvmfs2's command line.

    It lies below a fresh 0755 directory in /tmp (pytest's tmp_path_factory sits below a root-only directory
    when the tests run as root) and is world-readable, so the unprivileged test user can fetch it (by file://
    or through nginx) and unpack it. Removed at the end of the session.
    """
    base = Path(tempfile.mkdtemp(prefix="cvmfs-pilot-contract-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        staging = build_contract_staging(base / "srv", base / "work")
        make_world_readable(base)
        yield staging
    finally:
        shutil.rmtree(base, ignore_errors=True)

