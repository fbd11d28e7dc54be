"""Yum repository metadata from createrepo_c, in every compression, and malformed metadata."""

import gzip
import hashlib

import pytest

from cvmfs_pilot.dist.errors import RepodataError
from cvmfs_pilot.dist.repodata import Checksum, parse_repomd, read_primary
from support.yum import build_rpms, create_repo, stand_in


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Stand-in RPM files: cvmfs in two versions (x86_64), a noarch config and an i686 library."""
    work = tmp_path_factory.mktemp("packages")
    out = work / "out"
    build_rpms([stand_in("cvmfs", "2.12.3", "1.el9", "x86_64"), stand_in("cvmfs-libs", "2.12.3", "1.el9", "x86_64")],
               out, work / "a")
    build_rpms([stand_in("cvmfs", "2.13.2", "1.el9", "x86_64")], out, work / "b")
    build_rpms([stand_in("cvmfs-config-osg", "2.5", "1", "noarch")], out, work / "c")
    build_rpms([stand_in("fuse3-libs", "3.10.2", "9.el9", "i686")], out, work / "d")
    return out


@pytest.mark.parametrize("compression", ["gz", "xz", "bz2", "zstd"])
def test_primary_metadata_in_every_compression(packages, tmp_path, compression):
    repo = tmp_path / "repo"
    (repo / "Packages/c").mkdir(parents=True)
    for rpm in packages.iterdir():
        (repo / "Packages/c" / rpm.name).write_bytes(rpm.read_bytes())
    create_repo(repo, compression)
    url = "http://mirror.example.org/el9/x86_64/"
    primary = parse_repomd((repo / "repodata/repomd.xml").read_bytes(), url + "repodata/repomd.xml")
    assert primary.location.startswith("repodata/") and primary.checksum.type == "sha256"
    path = repo / primary.location
    assert primary.size == path.stat().st_size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == primary.checksum.hex

    found = read_primary(path, url, {"cvmfs", "fuse3-libs", "cvmfs-config-osg", "absent"})
    assert set(found) == {"cvmfs", "fuse3-libs", "cvmfs-config-osg"}  # cvmfs-libs was not asked for
    versions = sorted((p.version, p.release, p.arch) for p in found["cvmfs"])
    assert versions == [("2.12.3", "1.el9", "x86_64"), ("2.13.2", "1.el9", "x86_64")]
    config = found["cvmfs-config-osg"][0]
    assert (config.arch, config.epoch, config.nevra) == ("noarch", 0, "cvmfs-config-osg-2.5-1.noarch")
    assert config.url == url + "Packages/c/cvmfs-config-osg-2.5-1.noarch.rpm"
    rpm = packages / "cvmfs-config-osg-2.5-1.noarch.rpm"
    assert config.size == rpm.stat().st_size
    assert config.checksum == Checksum("sha256", hashlib.sha256(rpm.read_bytes()).hexdigest())
    assert found["fuse3-libs"][0].arch == "i686"


PRIMARY = b"""<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm"
          packages="1">
<package type="rpm">
  <name>cvmfs</name><arch>ppc64le</arch><version epoch="1" ver="2.13.2" rel="1.el9"/>
  <checksum type="sha" pkgid="YES">%s</checksum>
  <size package="1234" installed="5000" archive="6000"/>
  <location xml:base="https://copr.example.org/results/dwd/cvmfs/epel-9-ppc64le/"
            href="0815-cvmfs/cvmfs-2.13.2-1.el9.ppc64le.rpm"/>
</package>
</metadata>
""" % (b"a" * 40)


def test_xml_base_epoch_and_sha1_checksums(tmp_path):
    (tmp_path / "primary.xml.gz").write_bytes(gzip.compress(PRIMARY))
    [package] = read_primary(tmp_path / "primary.xml.gz", "https://mirror.example.org/", {"cvmfs"})["cvmfs"]
    assert package.url == "https://copr.example.org/results/dwd/cvmfs/epel-9-ppc64le/0815-cvmfs/" \
                          "cvmfs-2.13.2-1.el9.ppc64le.rpm"
    assert package.epoch == 1 and package.nevra == "cvmfs-1:2.13.2-1.el9.ppc64le"
    assert package.checksum == Checksum("sha", "a" * 40) and package.checksum.hasher().name == "sha1"


REPOMD = b"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision>%s</repomd>"""


@pytest.mark.parametrize("data, message", [
    (b"<html>not found</html>", "not a yum repomd.xml"),
    (b"\x00\x01binary", "not valid XML"),
    (REPOMD % b'<data type="filelists"><location href="f.xml.gz"/></data>', "lists no primary metadata"),
    (REPOMD % b'<data type="primary"><checksum type="sha256">abc</checksum><location href="p.xml.gz"/></data>',
     "abc is not a sha256 digest"),
    (REPOMD % b'<data type="primary"><checksum type="crc32">12345678</checksum><location href="p"/></data>',
     "unknown checksum type 'crc32'"),
    (REPOMD % b'<data type="primary"><checksum type="sha256">%s</checksum></data>' % (b"0" * 64),
     "the primary entry has no location"),
])
def test_malformed_repomd_is_refused(data, message):
    with pytest.raises(RepodataError, match=message):
        parse_repomd(data, "https://mirror.example.org/repodata/repomd.xml")


def test_a_package_located_on_the_local_file_system_is_refused(tmp_path):
    (tmp_path / "primary.xml").write_bytes(PRIMARY.replace(b"https://copr.example.org/", b"file:///etc/"))
    with pytest.raises(RepodataError, match="package cvmfs is located at file:///etc/results/.*outside the web"):
        read_primary(tmp_path / "primary.xml", "https://mirror.example.org/", {"cvmfs"})


def test_damaged_primary_metadata_is_refused(tmp_path):
    compressed = gzip.compress(PRIMARY)
    (tmp_path / "cut.xml.gz").write_bytes(compressed[:len(compressed) // 2])
    with pytest.raises(RepodataError, match="primary metadata.*cannot decompress|not valid XML"):
        read_primary(tmp_path / "cut.xml.gz", "https://mirror.example.org/", {"cvmfs"})
    (tmp_path / "bad.xml").write_bytes(PRIMARY.replace(b'ver="2.13.2" ', b""))
    with pytest.raises(RepodataError, match="package cvmfs has an incomplete version"):
        read_primary(tmp_path / "bad.xml", "https://mirror.example.org/", {"cvmfs"})
