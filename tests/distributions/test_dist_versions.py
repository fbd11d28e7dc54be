"""rpm version ordering, checked against the cases of rpm's own test suite (rpmvercmp.at)."""

import pytest

from cvmfs_pilot.dist.repodata import Checksum, Package, newest
from cvmfs_pilot.dist.versions import EVR, rpmvercmp

CASES = """
1.0 1.0 0 | 1.0 2.0 -1 | 2.0 1.0 1 | 2.0.1 2.0.1 0 | 2.0 2.0.1 -1 | 2.0.1 2.0 1 | 2.0.1a 2.0.1a 0
2.0.1a 2.0.1 1 | 2.0.1 2.0.1a -1 | 5.5p1 5.5p1 0 | 5.5p1 5.5p2 -1 | 5.5p2 5.5p1 1 | 5.5p10 5.5p10 0
5.5p1 5.5p10 -1 | 5.5p10 5.5p1 1 | 10xyz 10.1xyz -1 | 10.1xyz 10xyz 1 | xyz10 xyz10 0 | xyz10 xyz10.1 -1
xyz10.1 xyz10 1 | xyz.4 xyz.4 0 | xyz.4 8 -1 | 8 xyz.4 1 | xyz.4 2 -1 | 2 xyz.4 1 | 5.5p2 5.6p1 -1
5.6p1 5.5p2 1 | 5.6p1 6.5p1 -1 | 6.5p1 5.6p1 1 | 6.0.rc1 6.0 1 | 6.0 6.0.rc1 -1 | 10b2 10a1 1 | 10a2 10b2 -1
1.0aa 1.0aa 0 | 1.0a 1.0aa -1 | 1.0aa 1.0a 1 | 10.0001 10.0001 0 | 10.0001 10.1 0 | 10.1 10.0001 0
10.0001 10.0039 -1 | 10.0039 10.0001 1 | 4.999.9 5.0 -1 | 5.0 4.999.9 1 | 20101121 20101121 0
20101121 20101122 -1 | 20101122 20101121 1 | 2_0 2_0 0 | 2.0 2_0 0 | 2_0 2.0 0 | a a 0 | a+ a+ 0 | a+ a_ 0
a_ a+ 0 | +a +a 0 | +a _a 0 | _a +a 0 | +_ +_ 0 | _+ +_ 0 | _+ _+ 0 | + _ 0 | _ + 0
1.0~rc1 1.0~rc1 0 | 1.0~rc1 1.0 -1 | 1.0 1.0~rc1 1 | 1.0~rc1 1.0~rc2 -1 | 1.0~rc2 1.0~rc1 1
1.0~rc1~git123 1.0~rc1~git123 0 | 1.0~rc1~git123 1.0~rc1 -1 | 1.0~rc1 1.0~rc1~git123 1
1.0^ 1.0^ 0 | 1.0^ 1.0 1 | 1.0 1.0^ -1 | 1.0^git1 1.0^git1 0 | 1.0^git1 1.0 1 | 1.0 1.0^git1 -1
1.0^git1 1.0^git2 -1 | 1.0^git2 1.0^git1 1 | 1.0^git1 1.01 -1 | 1.01 1.0^git1 1
1.0^20160101 1.0^20160101 0 | 1.0^20160101 1.0.1 -1 | 1.0.1 1.0^20160101 1
1.0^20160101^git1 1.0^20160101^git1 0 | 1.0^20160102 1.0^20160101^git1 1 | 1.0^20160101^git1 1.0^20160102 -1
1.0~rc1^git1 1.0~rc1^git1 0 | 1.0~rc1^git1 1.0~rc1 1 | 1.0~rc1 1.0~rc1^git1 -1
1.0^git1~pre 1.0^git1~pre 0 | 1.0^git1 1.0^git1~pre 1 | 1.0^git1~pre 1.0^git1 -1
"""


@pytest.mark.parametrize("a, b, expected", [
    (case.split()[0], case.split()[1], int(case.split()[2]))
    for line in CASES.strip().splitlines() for case in line.split("|")])
def test_rpmvercmp_matches_rpm(a, b, expected):
    assert rpmvercmp(a, b) == expected


def test_epoch_version_release_order():
    assert EVR(1, "1.0", "1") > EVR(0, "9.9", "9")
    assert EVR(0, "2.13.2", "1.el9") > EVR(None, "2.13.2", "1.el8")
    assert EVR("0", "2.13.10", "1") > EVR(0, "2.13.9", "5")
    assert EVR(0, "1.0", "1") == EVR(0, "1.00", "1")
    assert str(EVR(2, "1.0", "3.el9")) == "2:1.0-3.el9" and str(EVR(0, "1.0", "3")) == "1.0-3"


def test_newest_takes_the_highest_evr():
    def package(version, release):
        return Package("cvmfs", "x86_64", 0, version, release, Checksum("sha256", "0" * 64), 1, "http://x/")
    packages = [package("2.13.2", "1"), package("2.13.10", "1"), package("2.13.10", "2.el9"), package("2.9", "9")]
    assert newest(packages).version == "2.13.10" and newest(packages).release == "2.el9"
    assert newest([]) is None
