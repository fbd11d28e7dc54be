"""Local yum repositories of stand-in packages, for the distribution builder's tests and benchmark.

Stand-ins are real RPMs built with rpmbuild (one spec per group of packages that share version, release and
architecture) and listed by createrepo_c; they have the upstream packages' names and file layout, with small
contents. :func:`build_mirror` makes every repository the shipped upstream definitions name, below
``<root>/<host>/<path>``, and writes a definitions file whose URLs point there through a web server serving root.
"""

import gzip
import hashlib
import json
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import zstandard

from cvmfs_pilot.dist.upstream import CVMFS2, PYTHON, PYTHON_ARCH, DistKey, Target, Upstream

RPMBUILD = Path("/usr/bin/rpmbuild")
CREATEREPO = Path("/usr/bin/createrepo_c")

CVMFS_VERSIONS = ("2.12.3", "2.13.2")  # every cvmfs repository has both; the newest is 2.13.2
SOURCE_CVMFS = {"osg": ("2.13.2", "1.osg25"), "egi": ("2.12.3", "1.umd5")}  # what the version repositories ship
OTHER_VERSIONS = {
    "fuse-libs": ("2.9.7", "10.el8"), "fuse3-libs": ("3.10.2", "9.el9"), "libfuse3-3": ("3.16.2", "150500.1.2"),
    "cvmfs-config-osg": ("2.5", "1.osg25"), "cvmfs-config-egi": ("2.6", "1.umd5"),
    "cvmfs-config-default": ("2.2", "1"), "cvmfs-x509-helper": ("2.4", "1"), "scitokens-cpp": ("1.1.3", "1"),
}
# payload compression per package family, so that the builder meets every compressor rpm uses
COMPRESSOR = {"cvmfs": "w3.zstdio", "fuse": "w2.xzdio", "config": "w6.gzdio", "other": "w9.bzdio"}
# repodata compression per repository role
REPODATA_COMPRESSION = {"cvmfs": "zstd", "fuse": "xz", "epel": "bz2"}


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Device:
    kind: str  # "c" or "b"
    major: int
    minor: int


@dataclass
class StandIn:
    """One package: files maps absolute paths to bytes, Symlink or Device; modes maps paths to "4755" etc."""

    name: str
    version: str
    release: str
    arch: str
    files: dict
    modes: dict = field(default_factory=dict)

    @property
    def file_name(self):
        return "{}-{}-{}.{}.rpm".format(self.name, self.version, self.release, self.arch)


def _blob(name, size):
    """size bytes of reproducible, half-compressible data."""
    generator = random.Random(name)
    half = generator.randbytes(size // 2)
    return half + bytes(size - len(half))


def stand_in(name, version, release, arch, scale=0):
    """A stand-in of an upstream package, laid out like the real one. scale: MB of library payload (0: tiny)."""
    lib = "/usr/lib64/"

    def library(file_name, megabytes):
        return _blob(name + file_name + version + release, int(megabytes * scale * 1e6) or 64)

    files = {}
    if name == "cvmfs":
        files = {
            "/usr/bin/cvmfs2": "#!/bin/sh\necho 'cvmfs2 stand-in {}'\n".format(version).encode(),
            "/usr/bin/cvmfs_config": b"#!/bin/sh\necho cvmfs_config stand-in\n",
            lib + "libcvmfs_fuse.so." + version: library("fuse", 10),
            lib + "libcvmfs_fuse.so": Symlink(lib + "libcvmfs_fuse.so." + version),  # absolute, as upstream
            lib + "libcvmfs_fuse_stub.so." + version: library("stub", 0.2),
            lib + "libcvmfs_fuse_stub.so": Symlink("libcvmfs_fuse_stub.so." + version),
            "/etc/cvmfs/default.conf": b"CVMFS_CACHE_BASE=/var/lib/cvmfs\nCVMFS_QUOTA_LIMIT=4000\n"
                                       b"CVMFS_MOUNT_DIR=/cvmfs\nreadonly CVMFS_USER=cvmfs\n",
            "/usr/lib/.build-id/4f/0123456789abcdef": Symlink("../../../../usr/bin/cvmfs2"),
        }
    elif name == "cvmfs-libs":
        files = {lib + "libcvmfs_crypto.so." + version: library("crypto", 1.5),
                 lib + "libcvmfs_util.so." + version: library("util", 1.5)}
    elif name == "cvmfs-fuse3":
        files = {lib + "libcvmfs_fuse3.so." + version: library("fuse3", 1),
                 lib + "libcvmfs_fuse3_stub.so." + version: library("stub3", 0.1)}
    elif name in ("fuse-libs", "fuse3-libs", "libfuse3-3"):
        base = "libfuse.so.2" if name == "fuse-libs" else "libfuse3.so.3"
        files = {lib + base + "." + version.split(".", 1)[1]: library("lib", 0.3),
                 lib + base: Symlink(base + "." + version.split(".", 1)[1])}
    elif name.startswith("cvmfs-config-"):
        flavour = name[len("cvmfs-config-"):]
        domain = {"osg": "opensciencegrid.org", "egi": "egi.eu", "default": "cern.ch"}[flavour]
        config_repo = {"osg": "config-osg.opensciencegrid.org", "egi": "config-egi.egi.eu",
                       "default": "cvmfs-config.cern.ch"}[flavour]
        files = {
            "/etc/cvmfs/default.d/50-{}.conf".format(flavour):
                "CVMFS_CONFIG_REPOSITORY={}\nCVMFS_DEFAULT_DOMAIN={}\n".format(config_repo, domain).encode(),
            "/etc/cvmfs/config.d/{}.conf".format(config_repo):
                'CVMFS_SERVER_URL="http://stratum1.{}/cvmfs/@fqrn@"\n'.format(domain).encode(),
            "/etc/cvmfs/keys/{0}/{0}.pub".format(domain):
                b"-----BEGIN PUBLIC KEY-----\nstand-in\n-----END PUBLIC KEY-----\n",
            "/usr/share/doc/{}/README".format(name): b"stand-in\n",
        }
    elif name == "cvmfs-x509-helper":
        files = {"/usr/libexec/cvmfs/authz/" + helper: "#!/bin/sh\necho {}\n".format(helper).encode()
                 for helper in ("cvmfs_x509_helper", "cvmfs_x509_validator", "cvmfs_scitoken_helper")}
    elif name == "scitokens-cpp":
        files = {lib + "libSciTokens.so.0.0.2": library("scitokens", 0.2),
                 lib + "libSciTokens.so.0": Symlink("libSciTokens.so.0.0.2")}
    else:
        files = {"/usr/share/doc/{}/README".format(name): b"stand-in\n"}
    modes = {path: "0755" for path in files if path.startswith(("/usr/bin/", "/usr/libexec/"))}
    return StandIn(name, version, release, arch, files, modes)


def _family(name):
    if name.startswith("cvmfs-config-"):
        return "config"
    if name.startswith("cvmfs"):
        return "cvmfs" if name != "cvmfs-x509-helper" else "other"
    return "fuse" if "fuse" in name else "other"


def _spec(packages, tree):
    first = packages[0]
    lines = ["Name: " + first.name, "Version: " + first.version, "Release: " + first.release,
             "Summary: stand-in", "License: BSD-3-Clause", "%global debug_package %{nil}"]
    if first.arch == "noarch":
        lines.append("BuildArch: noarch")
    lines += ["%description", "stand-in of {} for tests".format(first.name)]
    for package in packages[1:]:
        lines += ["%package -n " + package.name, "Summary: stand-in",
                  "%description -n " + package.name, "stand-in of {} for tests".format(package.name)]
    lines += ["%install", "cp -a {}/. %{{buildroot}}/".format(tree)]
    for index, package in enumerate(packages):
        lines.append("%files" if index == 0 else "%files -n " + package.name)
        for path, content in sorted(package.files.items()):
            if isinstance(content, Device):
                lines.append("%dev({},{},{}) {}".format(content.kind, content.major, content.minor, path))
            elif path in package.modes:
                lines.append("%attr({},root,root) {}".format(package.modes[path], path))
            else:
                lines.append(path)
    return "\n".join(lines) + "\n"


def build_rpms(packages, out_dir, work_dir, compressor="w6.gzdio"):
    """Build packages (sharing version, release and arch) with one rpmbuild run; returns their file paths."""
    work_dir = Path(work_dir)
    tree = work_dir / "tree"
    for package in packages:
        for path, content in package.files.items():
            target = tree / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Symlink):
                target.symlink_to(content.target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
    (work_dir / "rpm.spec").write_text(_spec(packages, tree))
    arch = packages[0].arch
    command = [str(RPMBUILD), "-bb", "--quiet", "--define", "_topdir " + str(work_dir / "top"),
               "--define", "_rpmdir " + str(work_dir / "rpms"), "--define", "_build_id_links none",
               "--define", "__os_install_post %{nil}", "--define", "_binary_payload " + compressor,
               "--define", "_buildhost stand-in.example.org"]
    if arch != "noarch":
        command += ["--target", arch]
    result = subprocess.run(command + [str(work_dir / "rpm.spec")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("rpmbuild failed for {}:\n{}".format(", ".join(p.name for p in packages), result.stdout))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for package in packages:
        built = work_dir / "rpms" / package.arch / package.file_name
        shutil.copy(built, out_dir / package.file_name)
        paths.append(out_dir / package.file_name)
    return paths


def create_repo(directory, compression="gz"):
    """Write (or rewrite) the repodata of the yum repository in directory, compressed with gz, xz, bz2 or zstd
    (this createrepo_c has no zstd: its gzip primary is recompressed)."""
    result = subprocess.run([str(CREATEREPO), "--quiet", "--general-compress-type",
                             "gz" if compression == "zstd" else compression, str(directory)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError("createrepo_c failed in {}:\n{}".format(directory, result.stdout))
    if compression == "zstd":
        _recompress_primary_zstd(Path(directory))


def _recompress_primary_zstd(directory):
    namespace = "http://linux.duke.edu/metadata/repo"
    ElementTree.register_namespace("", namespace)
    ElementTree.register_namespace("rpm", "http://linux.duke.edu/metadata/rpm")
    repomd_path = directory / "repodata" / "repomd.xml"
    tree = ElementTree.parse(repomd_path)
    for data in tree.getroot().findall("{%s}data" % namespace):
        if data.get("type") != "primary":
            continue
        location = data.find("{%s}location" % namespace)
        old = directory / location.get("href")
        compressed = zstandard.ZstdCompressor().compress(gzip.decompress(old.read_bytes()))
        digest = hashlib.sha256(compressed).hexdigest()
        new = old.parent / "{}-primary.xml.zst".format(digest)
        new.write_bytes(compressed)
        old.unlink()
        location.set("href", "repodata/" + new.name)
        checksum = data.find("{%s}checksum" % namespace)
        checksum.set("type", "sha256")
        checksum.text = digest
        data.find("{%s}size" % namespace).text = str(len(compressed))
    tree.write(repomd_path, xml_declaration=True, encoding="UTF-8")


def local_directory(root, url):
    """Where the mirror keeps the repository of an upstream URL: <root>/<host>/<path>."""
    parts = urlsplit(url)
    return Path(root) / parts.netloc / parts.path.strip("/")


def mirrored_definitions(base_url, out_path, upstream_path=None):
    """Write the shipped (or given) definitions with every https:// URL pointing below base_url instead."""
    text = Path(upstream_path or Upstream.load().path).read_text()
    Path(out_path).write_text(text.replace("https://", base_url.rstrip("/") + "/"))
    return Path(out_path)


def needed_packages(upstream):
    """{upstream repository URL: {(name, version, release, arch)}} of every package any distribution the
    definitions offer may use; cvmfs packages in every version of CVMFS_VERSIONS."""
    needed = {}

    def add(role, target, name, arch, versions):
        url = upstream.repository_url(role, target)
        for version, release in versions:
            needed.setdefault(url, set()).add((name, version, release, arch))

    for source_name, source in upstream.sources.items():
        python_target = Target(upstream.python_platform, PYTHON_ARCH)
        if source.config_package:
            add(source.config_package.repository, python_target, source.config_package.name, "noarch",
                [OTHER_VERSIONS[source.config_package.name]])
        for platform in upstream.platforms.values():
            for arch in platform.arches:
                target = Target(platform.name, arch)
                if not upstream.offers(source_name, target):
                    continue
                for spec in list(upstream.client_packages) + list(source.packages):
                    if not spec.applies_to(target):
                        continue
                    versions = ([(v, "1") for v in CVMFS_VERSIONS] if spec.match_cvmfs_version
                                else [OTHER_VERSIONS[spec.name]])
                    add(spec.repository, target, spec.name, arch, versions)
                if source.config_package:
                    add(source.config_package.repository, target, source.config_package.name, "noarch",
                        [OTHER_VERSIONS[source.config_package.name]])
                role = upstream.version_role(source_name, target)
                if source_name in SOURCE_CVMFS and role != "cvmfs":
                    add(role, target, "cvmfs", "x86_64", [SOURCE_CVMFS[source_name]])
    return needed


def _role_of(upstream, url):
    for role in upstream.repositories:
        for platform in upstream.platforms.values():
            for arch in platform.arches:
                if upstream.repository_url(role, Target(platform.name, arch)) == url:
                    return role
    return None


def build_mirror(root, work_dir, scale=0, workers=2, shared=True):
    """Build every repository the shipped definitions name below root; returns {upstream URL: directory}.

    shared: repositories get copies of one package file where name, version, release and architecture agree
    (fast). Otherwise each repository has packages of its own, with a release and contents of their own, as
    upstream repositories do (slower to make; for the benchmark).
    """
    upstream = Upstream.load()
    needed = needed_packages(upstream)
    groups = {}  # (names, version, release, arch) -> [StandIn]
    placements = {}  # group -> [repository directories]
    for url, packages in needed.items():
        by_group = {}
        for name, version, release, arch in sorted(packages):
            if not shared:
                release += ".r" + hashlib.sha256(url.encode()).hexdigest()[:6]
            by_group.setdefault((_family(name), version, release, arch), []).append(name)
        for (family, version, release, arch), names in by_group.items():
            group = (tuple(names), version, release, arch)
            groups[group] = [stand_in(name, version, release, arch, scale) for name in names]
            placements.setdefault(group, []).append(local_directory(root, url))
    work_dir = Path(work_dir)

    def build(group):
        digest = hashlib.sha256(json.dumps(group).encode()).hexdigest()[:16]
        built = build_rpms(groups[group], work_dir / "built" / digest, work_dir / "rpmbuild" / digest,
                           COMPRESSOR[_family(group[0][0])])
        for directory in placements[group]:
            directory.mkdir(parents=True, exist_ok=True)
            for path in built:
                shutil.copy(path, directory / path.name)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(build, sorted(groups)))
    directories = {url: local_directory(root, url) for url in needed}
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda url: create_repo(directories[url], REPODATA_COMPRESSION.get(
            _role_of(upstream, url), "gz")), sorted(directories)))
    return directories


def offered_keys(upstream):
    """Every DistKey the definitions offer: cvmfs2 per source and target, python per source."""
    keys = []
    for source in upstream.sources:
        for platform in upstream.platforms.values():
            for arch in platform.arches:
                if upstream.offers(source, Target(platform.name, arch)):
                    keys.append(DistKey(CVMFS2, source, platform.name, arch))
        keys.append(DistKey(PYTHON, source, "any", "noarch"))
    return keys
