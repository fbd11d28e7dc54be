"""The upstream definitions: which yum repositories and packages make each distribution (``upstream.json``).

The shipped file mirrors what cvmfsexec's makedist downloads today; ``--upstream FILE`` replaces it. Loading
checks the whole file, so that a mistake is reported with its place before anything is downloaded.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UpstreamError
from .versions import rpmvercmp

SHIPPED = Path(__file__).with_name("upstream.json")
FORMAT = 1
CVMFS2 = "cvmfs2"
PYTHON = "python"
ANY_PLATFORM = "any"
NOARCH = "noarch"
PYTHON_ARCH = "x86_64"  # the architecture whose repositories give the python engine its (noarch) packages
NAME = re.compile(r"[a-z0-9][a-z0-9_.]*\Z")  # source, platform and architecture names: no '-'
VARIABLE = re.compile(r"\$(releasever|basearch)\b|\$\{(releasever|basearch)\}")


@dataclass(frozen=True)
class Target:
    """A platform and architecture, written ``el9-x86_64``."""

    platform: str
    arch: str

    def __str__(self):
        return "{}-{}".format(self.platform, self.arch)

    @classmethod
    def parse(cls, text):
        platform, sep, arch = text.strip().partition("-")
        if not sep or not NAME.match(platform) or not NAME.match(arch):
            raise UpstreamError("{!r} is not a platform-architecture pair such as el9-x86_64".format(text))
        return cls(platform, arch)


PYTHON_TARGET = Target(ANY_PLATFORM, NOARCH)


@dataclass(frozen=True, order=True)
class DistKey:
    """What identifies a distribution across builds: engine, source, platform and architecture."""

    engine: str
    source: str
    platform: str
    arch: str

    @property
    def target(self):
        return Target(self.platform, self.arch)

    def __str__(self):
        return "{}-{}-{}-{}".format(self.engine, self.source, self.platform, self.arch)


@dataclass(frozen=True)
class PackageSpec:
    """A package a distribution needs, from which repository, and under which conditions."""

    name: str
    repository: str
    platforms: tuple = ()
    arches: tuple = ()
    cvmfs_from: str = ""
    cvmfs_below: str = ""
    match_cvmfs_version: bool = False

    def applies_to(self, target):
        """Whether the package may be needed for target (at some cvmfs version)."""
        return ((not self.platforms or target.platform in self.platforms)
                and (not self.arches or target.arch in self.arches))

    def applies(self, target, cvmfs_version):
        return (self.applies_to(target)
                and (not self.cvmfs_from or rpmvercmp(cvmfs_version, self.cvmfs_from) >= 0)
                and (not self.cvmfs_below or rpmvercmp(cvmfs_version, self.cvmfs_below) < 0))


@dataclass(frozen=True)
class Source:
    name: str
    platforms: tuple
    cvmfs_version_from: object  # repository role, or a per-target object
    config_package: object  # PackageSpec or None
    config_repository: object  # str or None
    default_repositories: tuple
    pac_urls: str
    packages: tuple


@dataclass(frozen=True)
class Platform:
    name: str
    arches: tuple
    releasever: str
    os_release: dict


class Upstream:
    """The loaded definitions; ``path`` is the file they came from."""

    def __init__(self, path, document):
        self.path = Path(path)
        reader = _Reader(self.path)
        if document.get("format") != FORMAT:
            reader.fail("format", "must be {} (this cvmfs-pilot reads format {} only)".format(FORMAT, FORMAT))
        self.platforms = {name: reader.platform(name, value)
                          for name, value in reader.mapping(document, "platforms").items()}
        self.repositories = reader.mapping(document, "repositories")
        for role, value in self.repositories.items():
            reader.per_target(value, "repositories." + role, str)
        self.client_packages = tuple(reader.package(value, "client_packages[{}]".format(i), self)
                                     for i, value in enumerate(reader.sequence(document, "client_packages")))
        self.sources = {name: reader.source(name, value, self)
                        for name, value in reader.mapping(document, "sources").items()}
        self.python_platform = document.get("python_platform")
        if self.python_platform not in self.platforms:
            reader.fail("python_platform", "must name one of the platforms")

    @classmethod
    def load(cls, path=None):
        """The definitions in path (default: the shipped file)."""
        path = Path(path) if path is not None else SHIPPED
        try:
            document = json.loads(path.read_bytes())
        except OSError as exc:
            raise UpstreamError("cannot read the upstream definitions {}: {}".format(path, exc.strerror)) from None
        except ValueError as exc:
            raise UpstreamError("{} is not valid JSON: {}".format(path, exc)) from None
        if not isinstance(document, dict):
            raise UpstreamError("{}: must hold a JSON object".format(path))
        return cls(path, document)

    def offers(self, source, target):
        """Whether the definitions offer a cvmfs2 distribution of source for target."""
        platform = self.platforms.get(target.platform)
        return (platform is not None and target.arch in platform.arches
                and target.platform in self.sources[source].platforms)

    def repository_url(self, role, target):
        """The URL of a repository role for a target, with $releasever and $basearch filled in and a final /."""
        platform = self.platforms[target.platform]
        template = pick(self.repositories[role], target)
        url = VARIABLE.sub(lambda m: platform.releasever if "releasever" in m.group(0) else target.arch, template)
        return url if url.endswith("/") else url + "/"

    def version_role(self, source, target):
        return pick(self.sources[source].cvmfs_version_from, target)


def pick(value, target):
    """A per-target value: the value itself, or from an object by '<platform>-<arch>', platform, arch, '*'."""
    if not isinstance(value, dict):
        return value
    for key in (str(target), target.platform, target.arch, "*"):
        if key in value:
            return value[key]
    return None


class _Reader:
    """Checks the parts of a definitions document, naming the file and key of any mistake."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, message):
        raise UpstreamError("{}: {}: {}; fix the file or use the shipped one".format(self.path, where, message))

    def mapping(self, document, key):
        value = document.get(key)
        if not isinstance(value, dict) or not value:
            self.fail(key, "must be a non-empty object")
        for name in value:
            if key in ("platforms", "sources") and not NAME.match(name):
                self.fail(key, "{!r} is not a valid name (lowercase letters, digits, '_' and '.')".format(name))
        return value

    def sequence(self, document, key, where=None):
        value = document.get(key)
        if not isinstance(value, list):
            self.fail(where or key, "must be a list")
        return value

    def strings(self, document, key, where):
        value = self.sequence(document, key, where)
        if not all(isinstance(item, str) and item for item in value):
            self.fail(where, "must be a list of non-empty strings")
        return tuple(value)

    def string(self, document, key, where, optional=False):
        value = document.get(key)
        if optional and value is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(where, "must be a non-empty string")
        return value

    def per_target(self, value, where, kind):
        values = value.values() if isinstance(value, dict) else [value]
        if isinstance(value, dict) and "*" not in value:
            self.fail(where, "an object of per-platform values needs a '*' entry")
        if not all(isinstance(item, kind) and item for item in values):
            self.fail(where, "must be a non-empty string or an object of them")

    def platform(self, name, value):
        where = "platforms." + name
        if not isinstance(value, dict):
            self.fail(where, "must be an object")
        arches = self.strings(value, "arches", where + ".arches")
        if not arches or not all(NAME.match(arch) for arch in arches):
            self.fail(where + ".arches", "must list architectures such as x86_64")
        os_release = value.get("os_release")
        if not isinstance(os_release, dict) or not all(isinstance(v, str) for v in os_release.values()):
            self.fail(where + ".os_release", "must be an object of strings")
        return Platform(name, arches, self.string(value, "releasever", where + ".releasever"), os_release)

    def package(self, value, where, upstream):
        if not isinstance(value, dict):
            self.fail(where, "must be an object")
        unknown = set(value) - set(PackageSpec.__dataclass_fields__)
        if unknown:
            self.fail(where, "unknown keys {}".format(", ".join(sorted(unknown))))
        spec = PackageSpec(
            name=self.string(value, "name", where + ".name"),
            repository=self.string(value, "repository", where + ".repository"),
            platforms=self.strings(value, "platforms", where + ".platforms") if "platforms" in value else (),
            arches=self.strings(value, "arches", where + ".arches") if "arches" in value else (),
            cvmfs_from=self.string(value, "cvmfs_from", where + ".cvmfs_from") if "cvmfs_from" in value else "",
            cvmfs_below=(self.string(value, "cvmfs_below", where + ".cvmfs_below")
                         if "cvmfs_below" in value else ""),
            match_cvmfs_version=value.get("match_cvmfs_version", False) is True)
        if spec.repository not in upstream.repositories:
            self.fail(where + ".repository", "{!r} is not in repositories".format(spec.repository))
        unknown_platforms = set(spec.platforms) - set(upstream.platforms)
        if unknown_platforms:
            self.fail(where + ".platforms", "unknown platforms {}".format(", ".join(sorted(unknown_platforms))))
        return spec

    def source(self, name, value, upstream):
        where = "sources." + name
        if not isinstance(value, dict):
            self.fail(where, "must be an object")
        platforms = self.strings(value, "platforms", where + ".platforms")
        unknown = set(platforms) - set(upstream.platforms)
        if unknown:
            self.fail(where + ".platforms", "unknown platforms {}".format(", ".join(sorted(unknown))))
        version_from = value.get("cvmfs_version_from")
        self.per_target(version_from, where + ".cvmfs_version_from", str)
        for role in (version_from.values() if isinstance(version_from, dict) else [version_from]):
            if role not in upstream.repositories:
                self.fail(where + ".cvmfs_version_from", "{!r} is not in repositories".format(role))
        config_package = value.get("config_package")
        config_repository = self.string(value, "config_repository", where + ".config_repository", optional=True)
        if (config_package is None) != (config_repository is None):
            self.fail(where, "config_package and config_repository go together (both null for no configuration)")
        return Source(
            name=name, platforms=platforms, cvmfs_version_from=version_from,
            config_package=(None if config_package is None
                            else self.package(config_package, where + ".config_package", upstream)),
            config_repository=config_repository,
            default_repositories=self.strings(value, "default_repositories", where + ".default_repositories"),
            pac_urls=self.string(value, "pac_urls", where + ".pac_urls"),
            packages=tuple(self.package(item, "{}.packages[{}]".format(where, i), upstream)
                           for i, item in enumerate(self.sequence(value, "packages", where + ".packages"))))
