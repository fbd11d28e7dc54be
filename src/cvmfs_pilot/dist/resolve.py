"""Choosing the exact packages of one distribution from the upstream definitions and repository package lists.

The cvmfs version is pinned, or the newest ``cvmfs`` of the source's version repository (osg and egi ship the
version they have validated). Every package that applies at that version is then the newest of its name for the
target architecture (or noarch) in its repository; the cvmfs packages themselves must have exactly that version.
"""

import hashlib
import json
from dataclasses import asdict, dataclass

from cvmfs_pilot import __version__

from .errors import RepodataError
from .repodata import newest
from .upstream import CVMFS2, PYTHON_ARCH, Target
from .versions import rpmvercmp

CVMFS_PACKAGE = "cvmfs"


@dataclass(frozen=True)
class Plan:
    """What one distribution is made of: its version and packages (repodata.Package, in unpacking order)."""

    key: object  # upstream.DistKey
    version: str
    packages: tuple
    source: object  # upstream.Source
    platform: object  # upstream.Platform, or None for the python engine


def _specs(upstream, key):
    """The package specs that may apply to key (whatever the cvmfs version), in unpacking order."""
    source = upstream.sources[key.source]
    specs = list(upstream.client_packages) + list(source.packages) if key.engine == CVMFS2 else []
    specs += [source.config_package] if source.config_package else []
    target = package_target(upstream, key)
    return [spec for spec in specs if key.engine != CVMFS2 or spec.applies_to(target)]


def package_target(upstream, key):
    """The target whose repositories a distribution's packages come from."""
    return key.target if key.engine == CVMFS2 else Target(upstream.python_platform, PYTHON_ARCH)


def wanted(upstream, key):
    """{repository URL: set of package names} that resolving key may look at (every condition counted in)."""
    target = package_target(upstream, key)
    names = {}
    for spec in _specs(upstream, key):
        names.setdefault(upstream.repository_url(spec.repository, target), set()).add(spec.name)
    if key.engine == CVMFS2:
        names.setdefault(upstream.repository_url(upstream.version_role(key.source, target), target),
                         set()).add(CVMFS_PACKAGE)
    return names


def definition_digest(upstream, key, extra):
    """SHA-256 of everything in the definitions that key depends on, plus extra (a JSON-able dict)."""
    source = asdict(upstream.sources[key.source])
    del source["packages"]
    definition = {
        "key": str(key),
        "source": source,
        "platform": asdict(upstream.platforms[key.platform]) if key.engine == CVMFS2 else None,
        "packages": [asdict(spec) for spec in _specs(upstream, key)],
        "repositories": {url: sorted(names) for url, names in wanted(upstream, key).items()},
        "extra": extra,
    }
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


def _cvmfs_version(upstream, key, catalogs, pinned):
    if pinned:
        return pinned
    url = upstream.repository_url(upstream.version_role(key.source, key.target), key.target)
    found = newest(p for p in catalogs[url].get(CVMFS_PACKAGE, []) if p.arch != "src")
    if found is None:
        raise RepodataError("{}: no cvmfs package, so the {} cvmfs version cannot be chosen; check the "
                            "repository URL in the upstream definitions, or pin one with --cvmfs-version".format(
                                url, key.source))
    return found.version


def resolve(upstream, key, catalogs, pinned_version=None):
    """The Plan of key. catalogs maps each URL of wanted(upstream, key) to {name: [Package]}."""
    target = package_target(upstream, key)
    version = _cvmfs_version(upstream, key, catalogs, pinned_version) if key.engine == CVMFS2 else __version__
    chosen = []
    for spec in _specs(upstream, key):
        if key.engine == CVMFS2 and not spec.applies(target, version):
            continue
        url = upstream.repository_url(spec.repository, target)
        candidates = [p for p in catalogs[url].get(spec.name, []) if p.arch in (target.arch, "noarch")]
        if spec.match_cvmfs_version:
            candidates = [p for p in candidates if rpmvercmp(p.version, version) == 0]
        package = newest(candidates)
        if package is None:
            raise RepodataError("{}: no {}{} package for {}; {}".format(
                url, spec.name, " " + version if spec.match_cvmfs_version else "", target.arch,
                "pin a version this repository has with --cvmfs-version" if spec.match_cvmfs_version
                else "check the repository URL and package name in the upstream definitions"))
        chosen.append(package)
    return Plan(key, version, tuple(chosen), upstream.sources[key.source],
                upstream.platforms[target.platform] if key.engine == CVMFS2 else None)
