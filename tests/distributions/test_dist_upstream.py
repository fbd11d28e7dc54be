"""The shipped upstream definitions, what they expand to, and how mistakes in a definitions file are reported."""

import copy
import json

import pytest

from cvmfs_pilot.dist.errors import UpstreamError
from cvmfs_pilot.dist.resolve import definition_digest, wanted
from cvmfs_pilot.dist.upstream import SHIPPED, DistKey, Target, Upstream, pick


@pytest.fixture(scope="module")
def shipped():
    return Upstream.load()


def test_the_shipped_definitions_follow_makedist(shipped):
    assert shipped.path == SHIPPED
    offered = {source: sorted(str(Target(p.name, a)) for p in shipped.platforms.values() for a in p.arches
                              if shipped.offers(source, Target(p.name, a))) for source in shipped.sources}
    everything = ["el10-x86_64", "el8-aarch64", "el8-ppc64le", "el8-x86_64", "el9-aarch64", "el9-ppc64le",
                  "el9-x86_64", "suse15-aarch64", "suse15-x86_64"]
    assert offered == {"osg": everything, "default": everything, "none": everything,
                       "egi": ["el9-aarch64", "el9-ppc64le", "el9-x86_64", "suse15-aarch64", "suse15-x86_64"]}
    url = shipped.repository_url
    assert url("cvmfs", Target("el9", "aarch64")) == "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/EL/9/aarch64/"
    assert url("cvmfs", Target("suse15", "x86_64")) == "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/suse/15/x86_64/"
    assert url("cvmfs", Target("el8", "ppc64le")) == \
        "https://download.copr.fedorainfracloud.org/results/dwd/cvmfs/epel-8-ppc64le/"
    assert url("fuse", Target("el9", "x86_64")) == "https://repo.almalinux.org/almalinux/9/AppStream/x86_64/os/"
    assert url("fuse", Target("el10", "x86_64")) == "https://repo.almalinux.org/almalinux/10/BaseOS/x86_64/os/"
    assert url("fuse", Target("suse15", "aarch64")) == "https://download.opensuse.org/distribution/leap/15.5/repo/oss/"
    assert url("osg", Target("suse15", "x86_64")) == "https://repo.opensciencegrid.org/osg/25-main/el8/release/x86_64/"
    assert url("egi", Target("el9", "x86_64")) == "https://repository.egi.eu/sw/production/umd/5/al9/release/x86_64/"
    assert shipped.version_role("egi", Target("suse15", "x86_64")) == "cvmfs"
    assert shipped.version_role("osg", Target("el8", "aarch64")) == "osg"
    assert shipped.sources["osg"].pac_urls.endswith("cernvm-wpad.fnal.gov/wpad.dat;http://cernvm-wpad.cern.ch/wpad.dat")
    assert shipped.sources["none"].config_repository is None


def test_what_a_distribution_may_need(shipped):
    assert wanted(shipped, DistKey("cvmfs2", "osg", "el9", "aarch64")) == {
        "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/EL/9/aarch64/": {"cvmfs", "cvmfs-libs", "cvmfs-fuse3"},
        "https://repo.almalinux.org/almalinux/9/AppStream/aarch64/os/": {"fuse3-libs"},
        "https://repo.opensciencegrid.org/osg/25-main/el9/release/x86_64/": {"cvmfs-config-osg", "cvmfs"},
    }  # no x509 helper or scitokens off x86_64
    assert wanted(shipped, DistKey("python", "egi", "any", "noarch")) == {
        "https://repository.egi.eu/sw/production/umd/5/al9/release/x86_64/": {"cvmfs-config-egi"}}
    assert wanted(shipped, DistKey("python", "none", "any", "noarch")) == {}


def test_definition_digests_follow_only_what_a_distribution_depends_on(shipped, tmp_path):
    key = DistKey("cvmfs2", "osg", "el9", "x86_64")
    document = json.loads(SHIPPED.read_text())
    changed = copy.deepcopy(document)
    changed["sources"]["egi"]["pac_urls"] = "http://other/wpad.dat"
    (tmp_path / "unrelated.json").write_text(json.dumps(changed))
    changed["sources"]["osg"]["default_repositories"].append("atlas.cern.ch")
    (tmp_path / "related.json").write_text(json.dumps(changed))
    digest = definition_digest(shipped, key, {})
    assert definition_digest(Upstream.load(tmp_path / "unrelated.json"), key, {}) == digest
    assert definition_digest(Upstream.load(tmp_path / "related.json"), key, {}) != digest
    assert definition_digest(shipped, key, {"cvmfs_version": "2.12.3"}) != digest


def test_per_target_values():
    value = {"el9-ppc64le": "a", "el9": "b", "ppc64le": "c", "*": "d"}
    assert pick(value, Target("el9", "ppc64le")) == "a"
    assert pick(value, Target("el9", "x86_64")) == "b"
    assert pick(value, Target("el8", "ppc64le")) == "c"
    assert pick(value, Target("el8", "x86_64")) == "d"
    assert pick("plain", Target("el8", "x86_64")) == "plain"
    with pytest.raises(UpstreamError, match="'el9_x86_64' is not a platform-architecture pair"):
        Target.parse("el9_x86_64")


def _broken(tmp_path, change):
    document = json.loads(SHIPPED.read_text())
    change(document)
    path = tmp_path / "upstream.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format=2), "format: must be 1"),
    (lambda d: d["client_packages"][0].update(repository="cvmrepo"), r"client_packages\[0\].repository: 'cvmrepo' is "
                                                                      "not in repositories"),
    (lambda d: d["client_packages"][1].update(version="2.13"), r"client_packages\[1\]: unknown keys version"),
    (lambda d: d["sources"]["osg"].update(platforms=["el7"]), "sources.osg.platforms: unknown platforms el7"),
    (lambda d: d["sources"]["egi"].update(config_repository=None), "sources.egi: config_package and "
                                                                   "config_repository go together"),
    (lambda d: d["repositories"].update(fuse={"el9": "https://x/"}), "repositories.fuse: an object of "
                                                                     "per-platform values needs a '\\*' entry"),
    (lambda d: d["platforms"].update({"el-9": d["platforms"]["el9"]}), "platforms: 'el-9' is not a valid name"),
    (lambda d: d.update(python_platform="el7"), "python_platform: must name one of the platforms"),
])
def test_mistakes_in_a_definitions_file_are_reported_with_their_place(tmp_path, change, message):
    path = _broken(tmp_path, change)
    with pytest.raises(UpstreamError, match="{}: {}".format(path, message)):
        Upstream.load(path)


def test_unreadable_definitions(tmp_path):
    with pytest.raises(UpstreamError, match="cannot read the upstream definitions .*absent.json"):
        Upstream.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UpstreamError, match="bad.json is not valid JSON"):
        Upstream.load(tmp_path / "bad.json")
