"""factory stage: the staging areas of docs/glidein.md, written atomically and only when something changed."""

import hashlib
import importlib.resources
import io
import json
import re
import subprocess
import sys
import tarfile

import pytest

from cvmfs_pilot.dist.staging import Staging
from cvmfs_pilot.dist.zipapp_engine import build_zipapp
from cvmfs_pilot.factory import StageError, load_config, stage
from cvmfs_pilot.factory import staging as factory_staging

from support.factory_env import BASE_TOML, write_factory

LISTS = ["file_list", "precvmfs_file_list", "at_file_list", "after_file_list", "cleanup"]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def snapshot(directory):
    """{relative path: (mtime_ns, inode)} of every file below directory."""
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_factory_index_is_the_documented_one(config):
    digest, frontend_digest = stage(config)
    area = config.staging_dir
    data = (area / "index.json").read_bytes()
    assert sha256(data) == digest and frontend_digest is None
    assert (area / "index.json.sha256").read_text() == digest + "  index.json\n"
    assert (area / "indexes" / (digest + ".json")).read_bytes() == data
    index = json.loads(data)
    assert list(index) == ["format", "kind", "name", "created", "files", "runtime", "attributes", "lists",
                           "last_script", "payload", "entries"]
    assert (index["format"], index["kind"], index["name"], index["runtime"]) == (
        1, "factory", "test-factory", "cvmfs-pilot.pyz")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", index["created"])
    assert sorted(index["files"]) == ["check_disk.sh", "cvmfs-pilot.pyz", "entry_check.sh", "glidein_startup.sh"]
    for name, listed in index["files"].items():
        staged = (area / "files" / name).read_bytes()
        assert listed == {"sha256": sha256(staged), "size": len(staged)}, name
    assert (area / "files" / "cvmfs-pilot.pyz").read_bytes() == build_zipapp()
    shipped = importlib.resources.files("cvmfs_pilot.glidein").joinpath("glidein_startup.sh").read_bytes()
    assert (area / "files" / "glidein_startup.sh").read_bytes() == shipped
    assert (area / "files" / "check_disk.sh").read_text() == "#!/bin/sh\necho disk ok\n"
    assert index["attributes"] == {"GLIDEIN_CVMFS": "preferred"}
    assert index["lists"] == {"file_list": [{"name": "check_disk.sh", "type": "exec"}], "precvmfs_file_list": [],
                              "at_file_list": [], "after_file_list": [], "cleanup": []}
    assert index["last_script"] is None
    assert index["payload"] == [["sh", "-c", "echo hello"]]
    assert index["entries"] == {"local-test": {
        "attributes": {"GLIDEIN_CVMFS_REPOS": "demo.example.org", "GLIDEIN_MAX_WALLTIME": "3600",
                       "GLIDEIN_RETIRE_TIME": "3000", "GLIDEIN_GRACE_TIME": "30"},
        "lists": {"file_list": [{"name": "entry_check.sh", "type": "exec"}]}, "payload": None}}
    assert not [p for p in area.rglob(".work-*")]


def test_the_runtime_runs_and_lists_cover_every_list(tmp_path):
    scripts = {name: "#!/bin/sh\necho {}\n".format(name) for name in
               ("scripts/pre.sh", "scripts/at.sh", "scripts/after.sh", "scripts/end.sh", "scripts/last.sh",
                "scripts/helper.source", "scripts/data.txt")}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("bin/tool")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "tools.tar.gz").write_bytes(buffer.getvalue())
    toml = BASE_TOML.replace("[factory.payload]", """\
[[factory.files]]
path = "scripts/pre.sh"
list = "precvmfs_file_list"
type = "exec"
[[factory.files]]
path = "scripts/helper.source"
list = "precvmfs_file_list"
type = "source"
config_out = "HELPER_SOURCE"
[[factory.files]]
path = "scripts/at.sh"
list = "at_file_list"
type = "exec"
cond = "RUN_AT"
[[factory.files]]
path = "scripts/tools.tar.gz"
list = "at_file_list"
type = "untar"
config_out = "TOOLS_DIR"
[[factory.files]]
path = "scripts/data.txt"
list = "after_file_list"
type = "regular"
[[factory.files]]
path = "scripts/after.sh"
list = "after_file_list"
type = "exec"
[[factory.files]]
path = "scripts/end.sh"
list = "cleanup"
type = "exec"
[[factory.files]]
path = "scripts/last.sh"
list = "last_script"
type = "exec"
[factory.payload]""")
    config = load_config(write_factory(tmp_path, toml, scripts))
    digest, _ = stage(config)
    index = json.loads((config.staging_dir / "indexes" / (digest + ".json")).read_bytes())
    assert index["lists"] == {
        "file_list": [{"name": "check_disk.sh", "type": "exec"}],
        "precvmfs_file_list": [{"name": "pre.sh", "type": "exec"},
                               {"name": "helper.source", "type": "source", "config_out": "HELPER_SOURCE"}],
        "at_file_list": [{"name": "at.sh", "type": "exec", "cond": "RUN_AT"},
                         {"name": "tools.tar.gz", "type": "untar", "config_out": "TOOLS_DIR"}],
        "after_file_list": [{"name": "data.txt", "type": "regular"}, {"name": "after.sh", "type": "exec"}],
        "cleanup": [{"name": "end.sh", "type": "exec"}]}
    assert index["last_script"] == "last.sh"
    named = {item["name"] for items in index["lists"].values() for item in items} | {index["last_script"]}
    named |= {item["name"] for entry in index["entries"].values() for item in entry["lists"]["file_list"]}
    assert named | {"cvmfs-pilot.pyz", "glidein_startup.sh"} == set(index["files"])  # every file has a hash
    runtime = config.staging_dir / "files" / "cvmfs-pilot.pyz"
    result = subprocess.run([sys.executable, str(runtime), "--version"], stdout=subprocess.PIPE, text=True,
                            check=True)
    assert result.stdout.startswith("cvmfs-pilot ")


def test_staging_again_writes_nothing_and_keeps_the_hash(config):
    first = stage(config)
    before = snapshot(config.staging_dir)
    assert stage(config) == first
    assert snapshot(config.staging_dir) == before


def test_a_changed_script_gives_a_new_index_and_the_old_one_stays(config, factory_dir):
    first, _ = stage(config)
    old_index = (config.staging_dir / "index.json").read_bytes()
    (factory_dir / "scripts" / "check_disk.sh").write_text("#!/bin/sh\necho disk checked twice\n")
    areas = factory_staging.stage_areas(config)
    second = areas[0].index_sha256
    assert second != first and areas[0].written and areas[0].replaced == ["check_disk.sh"]
    assert (config.staging_dir / "indexes" / (first + ".json")).read_bytes() == old_index
    index = json.loads((config.staging_dir / "index.json").read_bytes())
    assert sha256((config.staging_dir / "index.json").read_bytes()) == second
    assert index["files"]["check_disk.sh"]["sha256"] == sha256(b"#!/bin/sh\necho disk checked twice\n")
    assert (config.staging_dir / "index.json.sha256").read_text().split()[0] == second


def test_a_changed_attribute_changes_the_index_only(config, factory_dir):
    first, _ = stage(config)
    files = {k: v for k, v in snapshot(config.staging_dir).items() if k.startswith("files/")}
    toml = (factory_dir / "factory.toml").read_text().replace('"preferred"', '"required"')
    second, _ = stage(load_config(write_factory(factory_dir, toml)))
    assert second != first
    assert {k: v for k, v in snapshot(config.staging_dir).items() if k.startswith("files/")} == files


def test_a_broken_index_hash_file_is_repaired(config):
    first, _ = stage(config)
    (config.staging_dir / "index.json.sha256").write_text("junk\n")  # a crash between the renames
    second, _ = stage(config)
    assert (config.staging_dir / "index.json.sha256").read_text() == second + "  index.json\n"
    assert sha256((config.staging_dir / "index.json").read_bytes()) == second


def test_stale_temporary_files_of_a_killed_stage_are_removed(config):
    stage(config)
    for stale in (config.staging_dir / ".work-abc", config.staging_dir / "files" / ".work-def"):
        stale.write_text("partial")
    stage(config)
    assert not list(config.staging_dir.rglob(".work-*"))


def test_one_stage_at_a_time(config):
    with factory_staging.StagingArea(config.staging_dir).locked():
        with pytest.raises(StageError, match=r"another 'cvmfs-pilot factory stage' is writing .*/work/staging; wait "
                                             r"for it to finish"):
            stage(config)


def test_two_different_files_with_one_name_are_refused_until_one_is_renamed(tmp_path):
    clash = BASE_TOML.replace('path = "scripts/entry_check.sh"', 'path = "entry/check_disk.sh"')
    path = write_factory(tmp_path, clash, {"entry/check_disk.sh": "#!/bin/sh\necho entry disk\n"})
    with pytest.raises(StageError) as raised:
        stage(load_config(path))
    message = str(raised.value)
    assert "entries.local-test.files[1] ({}) and factory.files[1] ({}) are both named 'check_disk.sh' but " \
           "differ".format(tmp_path / "entry" / "check_disk.sh", tmp_path / "scripts" / "check_disk.sh") in message
    assert "set name = \"...\" on entries.local-test.files[1]" in message
    assert not (tmp_path / "work" / "staging" / "index.json").exists()

    renamed = clash.replace('path = "entry/check_disk.sh"', 'path = "entry/check_disk.sh"\nname = "entry_disk.sh"')
    digest, _ = stage(load_config(write_factory(tmp_path, renamed)))
    index = json.loads((tmp_path / "work" / "staging" / "index.json").read_bytes())
    assert index["entries"]["local-test"]["lists"]["file_list"] == [{"name": "entry_disk.sh", "type": "exec"}]
    assert (tmp_path / "work" / "staging" / "files" / "entry_disk.sh").read_text() == "#!/bin/sh\necho entry disk\n"


def test_the_same_file_twice_is_staged_once(tmp_path):
    toml = BASE_TOML.replace('path = "scripts/entry_check.sh"', 'path = "scripts/check_disk.sh"')
    config = load_config(write_factory(tmp_path, toml))
    stage(config)
    index = json.loads((config.staging_dir / "index.json").read_bytes())
    assert sorted(index["files"]) == ["check_disk.sh", "cvmfs-pilot.pyz", "glidein_startup.sh"]
    assert index["entries"]["local-test"]["lists"]["file_list"] == [{"name": "check_disk.sh", "type": "exec"}]


def test_a_file_may_not_take_the_runtime_name(tmp_path):
    toml = BASE_TOML.replace('type = "exec"\n\n[factory.payload]', 'type = "exec"\nname = "cvmfs-pilot.pyz"\n\n'
                                                                    '[factory.payload]')
    with pytest.raises(StageError, match=r"factory.files\[1\] \(.*check_disk.sh\) and the pilot runtime are both "
                                         r"named 'cvmfs-pilot.pyz'"):
        stage(load_config(write_factory(tmp_path, toml)))


def test_a_missing_file_names_its_key(config, factory_dir):
    (factory_dir / "scripts" / "entry_check.sh").unlink()
    with pytest.raises(StageError) as raised:
        stage(config)
    assert str(raised.value) == "{}: entries.local-test.files[1].path: {} does not exist; create it or fix the " \
                                "path".format(config.path, factory_dir / "scripts" / "entry_check.sh")


def test_an_untar_file_must_be_a_tarball(tmp_path):
    toml = BASE_TOML.replace('list = "file_list"\ntype = "exec"', 'list = "file_list"\ntype = "untar"')
    with pytest.raises(StageError, match=r"factory.files\[1\]: .*check_disk.sh has type 'untar' but is not a "
                                         r"gzip-compressed tar archive"):
        stage(load_config(write_factory(tmp_path, toml)))


def test_without_the_bootstrap_staging_fails_clearly(config, monkeypatch):
    monkeypatch.setattr(factory_staging, "BOOTSTRAP_PACKAGE", "cvmfs_pilot.no_such_package")
    with pytest.raises(StageError, match=r"the pilot bootstrap cvmfs_pilot/no_such_package/glidein_startup.sh is "
                                         r"not part of this cvmfs-pilot installation"):
        stage(config)
    assert not config.staging_dir.exists()


def test_the_client_distributions_give_their_attributes(tmp_path):
    dists = tmp_path / "dists"
    toml = BASE_TOML + '[cvmfs]\ndist_staging_dir = "dists"\ndist_staging_urls = ["http://127.0.0.1:8080/dists", ' \
                       '"http://127.0.0.2/dists/"]\n'
    config = load_config(write_factory(tmp_path, toml))
    with pytest.raises(StageError, match="has no index.json and index.json.sha256; run 'cvmfs-pilot dist build "
                                         "--staging {}' first".format(dists)):
        stage(config)
    dist_digest = Staging(dists).publish_index([], 0)
    digest, _ = stage(config)
    index = json.loads((config.staging_dir / "index.json").read_bytes())
    assert index["attributes"] == {"GLIDEIN_CVMFS": "preferred",
                                   "CVMFS_DIST_STAGING": "http://127.0.0.1:8080/dists/,http://127.0.0.2/dists/",
                                   "CVMFS_DIST_INDEX_SHA256": dist_digest}
    (dists / "index.json.sha256").write_text("0" * 64 + "  index.json\n")
    with pytest.raises(StageError, match="index.json does not match its index.json.sha256"):
        stage(config)


def test_the_frontend_area(tmp_path):
    toml = BASE_TOML + """
[frontend]
name = "demo-frontend"
staging_dir = "frontend"
staging_urls = ["http://127.0.0.1:8080/frontend/"]
[frontend.attributes]
GLIDEIN_CVMFS = "required"
[[frontend.files]]
path = "scripts/vo_check.sh"
type = "exec"
[frontend.payload]
commands = [["echo", "vo"]]
"""
    config = load_config(write_factory(tmp_path, toml, {"scripts/vo_check.sh": "#!/bin/sh\necho vo\n"}))
    digest, frontend_digest = stage(config)
    area = tmp_path / "frontend"
    data = (area / "index.json").read_bytes()
    assert sha256(data) == frontend_digest
    assert (area / "index.json.sha256").read_text() == frontend_digest + "  index.json\n"
    assert (area / "indexes" / (frontend_digest + ".json")).read_bytes() == data
    index = json.loads(data)
    del index["created"]
    assert index == {"format": 1, "kind": "frontend", "name": "demo-frontend",
                     "files": {"vo_check.sh": {"sha256": sha256(b"#!/bin/sh\necho vo\n"), "size": 18}},
                     "attributes": {"GLIDEIN_CVMFS": "required"},
                     "lists": {"file_list": [{"name": "vo_check.sh", "type": "exec"}]},
                     "last_script": None, "payload": [["echo", "vo"]]}
    assert sorted(p.name for p in (area / "files").iterdir()) == ["vo_check.sh"]
    assert "vo_check.sh" not in json.loads((config.staging_dir / "index.json").read_bytes())["files"]
    assert stage(config) == (digest, frontend_digest)


def test_the_command_prints_the_hashes(config, capsys):
    from cvmfs_pilot.cli import main
    assert main(["factory", "stage", "--config", str(config.path)]) == 0
    digest = (config.staging_dir / "index.json.sha256").read_text().split()[0]
    assert capsys.readouterr().out == "factory test-factory: index sha256 {} (written) in {}\n".format(
        digest, config.staging_dir)
    assert main(["factory", "stage", "--config", str(config.path)]) == 0
    assert "(unchanged)" in capsys.readouterr().out
    (config.path.parent / "scripts" / "check_disk.sh").write_text("changed\n")
    assert main(["factory", "--config", str(config.path), "stage"]) == 0
    captured = capsys.readouterr()
    assert "warning: {}/files/check_disk.sh changed; pilots submitted with an older index will refuse it".format(
        config.staging_dir) in captured.err
    (config.path.parent / "scripts" / "check_disk.sh").unlink()
    assert main(["factory", "stage", "--config", str(config.path)]) == 1
    assert "cvmfs-pilot factory: error: {}: factory.files[1].path: ".format(config.path) in capsys.readouterr().err
