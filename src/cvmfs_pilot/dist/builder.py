"""Building one distribution from its Plan: unpack the packages, add the builder's files, pack ``<name>.tar.gz``.

The tarball's root holds ``dist.json`` (see docs/staging.md), the same document that is staged beside it. Its
name is ``<engine>-<source>-<platform>-<arch>-<version>-<digest>``, digest being the start of the SHA-256 of
dist.json: a distribution's name changes exactly when what it is made of changes.
"""

import hashlib
import json
import os

from cvmfs_pilot import __version__

from .errors import DistError, RpmError
from .layout import CONFIG_DIR, ROOT_PLACEHOLDER, wrap_authz_helpers, write_default_local, write_os_release
from .rpm import unpack_rpm
from cvmfs_pilot.node.safe_extract import ArchiveRejected
from .tarball import pack
from .upstream import CVMFS2

FORMAT = 1
DIST_JSON = "dist.json"
ZIPAPP = "cvmfs-pilot.pyz"
CVMFS2_ENTRY_POINT = "usr/bin/cvmfs2"
LIBRARY_DIRS = ("usr/lib64", "usr/lib")
BUILDER = "cvmfs-pilot " + __version__
NAME_DIGEST_LENGTH = 12


def describe(plan, zipapp_sha256=None):
    """The dist.json document of a plan (zipapp_sha256: that of the python engine's zipapp)."""
    key = plan.key
    description = {
        "format": FORMAT,
        "engine": key.engine,
        "source": key.source,
        "platform": key.platform,
        "arch": key.arch,
        "version": plan.version,
        "builder": BUILDER,
        "entry_point": CVMFS2_ENTRY_POINT if key.engine == CVMFS2 else ZIPAPP,
        "library_dirs": list(LIBRARY_DIRS) if key.engine == CVMFS2 else [],
        "config_dir": CONFIG_DIR,
        "root_placeholder": ROOT_PLACEHOLDER,
        "config_repository": plan.source.config_repository,
        "default_repositories": list(plan.source.default_repositories),
        "packages": [{"name": p.name, "epoch": p.epoch, "version": p.version, "release": p.release,
                      "arch": p.arch, "checksum": str(p.checksum), "size": p.size, "url": p.url}
                     for p in plan.packages],
    }
    if key.engine != CVMFS2:
        description["zipapp_sha256"] = zipapp_sha256
    return description


def description_bytes(description):
    return (json.dumps(description, indent=2, sort_keys=True) + "\n").encode()


def distribution_name(description):
    digest = hashlib.sha256(description_bytes(description)).hexdigest()[:NAME_DIGEST_LENGTH]
    return "{engine}-{source}-{platform}-{arch}-{version}-".format(**description) + digest


def _keep_config(relative):
    return relative in ("etc", CONFIG_DIR) or relative.startswith(CONFIG_DIR + "/")


def build(plan, description, package_files, zipapp, work_dir, step):
    """Build the distribution in work_dir (an empty directory); returns the tarball's path and tarball.Packed.

    package_files are the downloaded files of plan.packages, in the same order. step(text) reports progress.
    """
    tree = os.path.join(work_dir, "tree")
    os.mkdir(tree)
    cvmfs2 = plan.key.engine == CVMFS2
    step("unpacking")
    for package, path in zip(plan.packages, package_files):
        try:
            identity = unpack_rpm(path, tree, keep=None if cvmfs2 else _keep_config)
        except (RpmError, ArchiveRejected) as exc:
            raise type(exc)("{} from {}: {}; it was not used".format(package.nevra, package.url, exc)) from None
        expected = (package.name, package.epoch, package.version, package.release, package.arch)
        if identity != expected:
            raise DistError("{}: the file is {}-{}:{}-{}.{}, but the repository metadata lists {}; the repository "
                            "is inconsistent, so it was not used".format(package.url, *identity, package.nevra))
    if cvmfs2:
        if not os.path.isfile(os.path.join(tree, CVMFS2_ENTRY_POINT)):
            raise DistError("the packages {} provide no {}; check the package names in the upstream "
                            "definitions".format(", ".join(p.nevra for p in plan.packages), CVMFS2_ENTRY_POINT))
        wrap_authz_helpers(tree)
        write_os_release(tree, plan.platform)
    else:
        with open(os.path.join(tree, ZIPAPP), "wb") as f:
            f.write(zipapp)
        os.chmod(os.path.join(tree, ZIPAPP), 0o755)
    write_default_local(tree, plan.source)
    with open(os.path.join(tree, DIST_JSON), "wb") as f:
        f.write(description_bytes(description))
    step("packing")
    tarball = os.path.join(work_dir, "dist.tar.gz")
    return tarball, pack(tree, tarball)
