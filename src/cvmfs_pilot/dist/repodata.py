"""Yum repository metadata: ``repodata/repomd.xml`` and the ``primary`` package list it points to.

primary.xml may be stored plain or compressed with gzip, xz, zstd or bzip2; the compression is recognised from
the file's first bytes. Package and metadata checksums are ``(type, hex)`` pairs with yum's type names (``sha``
is SHA-1).
"""

import bz2
import gzip
import hashlib
import lzma
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import zstandard

from .errors import RepodataError
from .versions import EVR

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
REPOMD_PATH = "repodata/repomd.xml"
HASH_NAMES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
              "sha512": "sha512", "md5": "md5"}


class Checksum(NamedTuple):
    """A checksum as repository metadata states it: yum's type name and the hex digest."""

    type: str
    hex: str

    def __str__(self):
        return "{}:{}".format(self.type, self.hex)

    def hasher(self):
        return new_hasher(self.type)


def new_hasher(type_name):
    """A hashlib object for a yum checksum type; RepodataError for a type yum does not define."""
    name = HASH_NAMES.get(type_name.lower())
    if name is None:
        raise RepodataError("unknown checksum type {!r} (known: {})".format(type_name, ", ".join(sorted(HASH_NAMES))))
    return hashlib.new(name)


def _checksum(element, where):
    if element is None or not element.get("type") or not (element.text or "").strip():
        raise RepodataError("{}: missing checksum".format(where))
    checksum = Checksum(element.get("type").lower(), element.text.strip().lower())
    if len(checksum.hex) != checksum.hasher().digest_size * 2 or any(c not in "0123456789abcdef"
                                                                     for c in checksum.hex):
        raise RepodataError("{}: {} is not a {} digest".format(where, checksum.hex, checksum.type))
    return checksum


def _int(text, where):
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise RepodataError("{}: {!r} is not a number".format(where, text)) from None
    if value < 0:
        raise RepodataError("{}: negative number {}".format(where, value))
    return value


@dataclass(frozen=True)
class MetadataFile:
    """One file listed in repomd.xml: where it is (relative to the repository), its size and checksum."""

    location: str
    checksum: Checksum
    size: int  # -1 when repomd.xml does not say


def parse_repomd(data, url):
    """The primary metadata file listed in repomd.xml (bytes fetched from url)."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise RepodataError("{}: not valid XML ({})".format(url, exc)) from None
    if root.tag != REPO_NS + "repomd":
        raise RepodataError("{}: not a yum repomd.xml (root element {})".format(url, root.tag))
    for data_element in root.findall(REPO_NS + "data"):
        if data_element.get("type") != "primary":
            continue
        location = data_element.find(REPO_NS + "location")
        href = location.get("href") if location is not None else None
        if not href:
            raise RepodataError("{}: the primary entry has no location".format(url))
        size_element = data_element.find(REPO_NS + "size")
        size = -1 if size_element is None else _int(size_element.text, url + ": primary size")
        return MetadataFile(href, _checksum(data_element.find(REPO_NS + "checksum"), url + ": primary"), size)
    raise RepodataError("{}: lists no primary metadata; is this a yum repository?".format(url))


@dataclass(frozen=True)
class Package:
    """One package of a repository's primary list."""

    name: str
    arch: str
    epoch: int
    version: str
    release: str
    checksum: Checksum
    size: int
    url: str  # absolute

    @property
    def evr(self):
        return EVR(self.epoch, self.version, self.release)

    @property
    def nevra(self):
        return "{}-{}.{}".format(self.name, self.evr, self.arch)


def open_decompressed(path):
    """A binary file object reading path decompressed, by its magic bytes (gzip, xz, zstd, bzip2 or plain)."""
    with open(path, "rb") as probe:
        magic = probe.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb", format=lzma.FORMAT_XZ)
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True,
                                                          closefd=True)
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def _package(element, repository_url, where):
    def text(tag):
        child = element.find(COMMON_NS + tag)
        value = None if child is None else (child.text or "").strip()
        if not value:
            raise RepodataError("{}: a package without {}".format(where, tag))
        return value

    name = text("name")
    version = element.find(COMMON_NS + "version")
    location = element.find(COMMON_NS + "location")
    size = element.find(COMMON_NS + "size")
    if version is None or location is None or not location.get("href") or size is None:
        raise RepodataError("{}: package {} lacks its version, location or size".format(where, name))
    if not version.get("ver") or not version.get("rel"):
        raise RepodataError("{}: package {} has an incomplete version".format(where, name))
    base = location.get(XML_BASE) or repository_url
    url = urljoin(base if base.endswith("/") else base + "/", location.get("href"))
    if urlsplit(url).scheme not in ("http", "https", urlsplit(repository_url).scheme):
        raise RepodataError("{}: package {} is located at {}, outside the web; refused".format(where, name, url))
    return Package(name=name, arch=text("arch"), epoch=_int(version.get("epoch") or "0", where),
                   version=version.get("ver"), release=version.get("rel"),
                   checksum=_checksum(element.find(COMMON_NS + "checksum"), "{}: package {}".format(where, name)),
                   size=_int(size.get("package"), "{}: size of {}".format(where, name)), url=url)


def read_primary(path, repository_url, names):
    """The packages named in names (a set) from the primary.xml at path, as a dict name -> [Package].

    The file is parsed as a stream, so memory stays small however large the repository is. repository_url is
    the base for package locations that have no ``xml:base`` of their own.
    """
    found = {}
    where = "{} (primary metadata)".format(repository_url)
    try:
        with open_decompressed(path) as stream:
            for _, element in ElementTree.iterparse(stream, events=("end",)):
                if element.tag != COMMON_NS + "package":
                    continue
                if element.get("type", "rpm") == "rpm":
                    name_element = element.find(COMMON_NS + "name")
                    if name_element is not None and (name_element.text or "").strip() in names:
                        package = _package(element, repository_url, where)
                        found.setdefault(package.name, []).append(package)
                element.clear()
    except ElementTree.ParseError as exc:
        raise RepodataError("{}: not valid XML ({})".format(where, exc)) from None
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise RepodataError("{}: cannot decompress ({})".format(where, exc)) from None
    return found


def newest(packages):
    """The package with the highest epoch:version-release; ties go to the one listed last."""
    best = None
    for package in packages:
        if best is None or not package.evr < best.evr:
            best = package
    return best
