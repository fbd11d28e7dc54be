"""The node probe: the os-release mapping, each check on recorded inputs, the child-process trials, and the live
probe of this machine as the unprivileged test user."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvmfs_pilot.node import osinfo, probe, trial
from cvmfs_pilot.node.probe import ERROR, NO, SKIPPED, YES

SRC = Path(__file__).resolve().parents[2] / "src"
PYTHON36 = "/root/.pyenv/versions/3.6.15/bin/python3.6"


def os_release(**fields):
    return "".join('{}="{}"\n'.format(key, value) for key, value in fields.items())


@pytest.mark.parametrize("fields, platform", [
    (dict(ID="rhel", VERSION_ID="7.9", ID_LIKE="fedora"), "el7"),
    (dict(ID="centos", VERSION_ID="7", ID_LIKE="rhel fedora"), "el7"),
    (dict(ID="rocky", VERSION_ID="8.10", ID_LIKE="rhel centos fedora"), "el8"),
    (dict(ID="almalinux", VERSION_ID="9.4", ID_LIKE="rhel centos fedora"), "el9"),
    (dict(ID="ol", VERSION_ID="9.3", ID_LIKE="fedora"), "el9"),
    (dict(ID="centos", VERSION_ID="10", ID_LIKE="rhel fedora"), "el10"),
    (dict(ID="rhel", VERSION_ID="6.10"), None),
    (dict(ID="fedora", VERSION_ID="40"), None),
    (dict(ID="sles", VERSION_ID="15.5", ID_LIKE="suse"), "suse15"),
    (dict(ID="opensuse-leap", VERSION_ID="15.6", ID_LIKE="suse opensuse"), "suse15"),
    (dict(ID="opensuse-tumbleweed", VERSION_ID="20240101", ID_LIKE="opensuse suse"), None),
    (dict(ID="sles", VERSION_ID="12.5"), None),
    (dict(ID="debian", VERSION_ID="11"), "debian11"),
    (dict(ID="debian", VERSION_ID="12"), "debian12"),
    (dict(ID="debian", VERSION_ID="13"), "debian13"),
    (dict(ID="debian", VERSION_ID="10"), None),
    (dict(ID="ubuntu", VERSION_ID="22.04", ID_LIKE="debian"), "ubuntu22"),
    (dict(ID="ubuntu", VERSION_ID="24.04", ID_LIKE="debian"), "ubuntu24"),
    (dict(ID="ubuntu", VERSION_ID="20.04", ID_LIKE="debian"), None),
    (dict(ID="linuxmint", VERSION_ID="21.3", ID_LIKE="ubuntu debian"), None),
    (dict(ID="alpine", VERSION_ID="3.20.0"), None),
    (dict(), None),
])
def test_os_release_maps_to_a_platform(fields, platform):
    assert osinfo.platform_of(osinfo.parse_os_release(os_release(**fields))) == platform


def test_os_release_parsing_handles_quotes_comments_and_junk():
    text = "# comment\nID=debian\nPRETTY_NAME='Debian 12'\nVERSION_ID=\"12\"\nBROKEN=\"unterminated\nnoequals\n"
    assert osinfo.parse_os_release(text) == {"ID": "debian", "PRETTY_NAME": "Debian 12", "VERSION_ID": "12"}


@pytest.mark.parametrize("platform, builds", [
    ("el9", ("el9",)), ("suse15", ("suse15",)), ("debian11", ("el8",)), ("debian13", ("el9",)),
    ("ubuntu24", ("el9",)), (None, ()),
])
def test_debian_and_ubuntu_borrow_el_builds(platform, builds):
    assert osinfo.build_platforms(platform) == builds


def test_check_os_explains_an_unsupported_system():
    check = probe.check_os(os_release(ID="alpine", VERSION_ID="3.20.0", PRETTY_NAME="Alpine Linux v3.20"))
    assert check.result == "unknown"
    assert "Alpine Linux v3.20 is not a platform" in check.reason and "python engine" in check.reason
    assert probe.check_os(os_release(ID="ubuntu", VERSION_ID="24.04")).details["family"] == "ubuntu"


@pytest.mark.parametrize("release, supported", [
    ("3.10.0-1062.el7.x86_64", False), ("3.10.0-1127.el7.x86_64", True), ("3.10.0-1160.119.1.el7.x86_64", True),
    ("3.10", False), ("4.17.0", False), ("4.18.0-553.el8_10.x86_64", True), ("5.14.0-427.el9.x86_64", True),
    ("6.8.0-45-generic", True), ("garbage", False),
])
def test_kernel_rule_for_fuse_in_user_namespaces(release, supported):
    assert probe.kernel_has_userns_fuse(release) is supported
    assert probe.check_kernel(release).details["userns_fuse"] is supported


@pytest.mark.parametrize("kernel_supports, works, value", [
    (True, True, "enabled"), (True, False, "disabled"), (False, False, "unavailable"), (False, True, "error"),
    (True, None, "error"),
])
def test_glidein_classification_of_user_namespaces(kernel_supports, works, value):
    assert probe.glidein_userns_value(kernel_supports, works) == value


SYSCTLS_OPEN = {"max_user_namespaces": 1000, "unprivileged_userns_clone": None,
                "apparmor_restrict_unprivileged_userns": None}
EPERM = {"ok": False, "errno": 1, "error": "unshare failed: Operation not permitted"}


@pytest.mark.parametrize("sysctls, outcome, result, reason", [
    ({}, {"ok": True}, YES, "entered a new user"),
    (dict(SYSCTLS_OPEN, max_user_namespaces=0), EPERM, NO, "user.max_user_namespaces is 0"),
    (dict(SYSCTLS_OPEN, unprivileged_userns_clone=0), EPERM, NO, "kernel.unprivileged_userns_clone is 0"),
    (dict(SYSCTLS_OPEN, apparmor_restrict_unprivileged_userns=1), EPERM, NO, "apparmor_restrict"),
    (SYSCTLS_OPEN, EPERM, NO, "Operation not permitted (a container's seccomp"),
    (SYSCTLS_OPEN, {"ok": None, "error": "no answer within 10 s"}, ERROR, "could not decide: no answer"),
])
def test_user_namespace_check_names_the_cause(sysctls, outcome, result, reason):
    check = probe.check_user_namespaces(True, sysctls, outcome)
    assert check.result == result
    assert reason in check.reason


def test_user_namespace_check_without_kernel_support():
    check = probe.check_user_namespaces(False, {}, EPERM)
    assert (check.result, check.details["glidein"]) == (NO, "unavailable")


def test_fuse_in_user_namespace_is_skipped_when_a_precondition_fails():
    yes = probe.Check("user_namespaces", YES, "", {})
    no_fuse = probe.Check("dev_fuse", NO, "", {})
    check = probe.check_fuse_in_user_namespace(yes, no_fuse, None)
    assert (check.result, check.reason) == (SKIPPED, "not tried: dev_fuse is no")
    failed = probe.check_fuse_in_user_namespace(yes, yes, {"ok": False, "errno": 1, "error": "mount(2) failed"})
    assert (failed.result, failed.reason) == (NO, "mount(2) failed")


def test_dev_fuse_check(tmp_path):
    assert probe.check_dev_fuse(str(tmp_path / "missing")).result == NO
    regular = tmp_path / "fuse"
    regular.write_text("")
    assert "not a character device" in probe.check_dev_fuse(str(regular)).reason
    assert probe.check_dev_fuse("/dev/null").result == YES


def test_fusermount_check(tmp_path):
    assert probe.check_fusermount(None).result == NO
    helper = tmp_path / "fusermount3"
    helper.write_text("")
    helper.chmod(0o755)
    assert "not setuid root" in probe.check_fusermount(str(helper)).reason


def test_fuse_group_check():
    class Group(object):
        gr_gid = 990
    assert probe.check_fuse_group(None, {100}).result == NO
    assert probe.check_fuse_group(Group, {100, 990}).result == YES
    assert probe.check_fuse_group(Group, {100}).reason == "is not a member of group 'fuse' (990)"


def test_cvmfs_check():
    assert probe.check_cvmfs("/cvmfs", False, {}).reason == "/cvmfs does not exist"
    assert probe.check_cvmfs("/cvmfs", True, {}).reason == "/cvmfs has no repositories"
    both = probe.check_cvmfs("/cvmfs", True, {"a.org": {"ok": True}, "b.org": {"ok": True}})
    assert (both.result, both.details["answering"]) == (YES, ["a.org", "b.org"])
    one = probe.check_cvmfs("/cvmfs", True, {"a.org": {"ok": True}, "b.org": {"ok": None, "error": "no answer"}})
    assert one.result == NO and "b.org" in one.reason and one.details["failing"] == {"b.org": "no answer"}


def test_masked_proc_is_detected():
    host = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n23 22 0:5 / /proc rw - proc proc rw\n" \
           "24 23 0:6 / /proc/sys/fs/binfmt_misc rw - autofs systemd-1 rw\n"
    assert probe.check_proc_masked(host).result == NO
    docker = host + "30 23 0:20 /null /proc/key\\040s rw - devtmpfs udev rw\n"
    check = probe.check_proc_masked(docker)
    assert (check.result, check.details["masks"]) == (YES, ["/proc/key s"])


def test_container_tools_check():
    check = probe.check_container_tools(lambda name: "/usr/bin/bwrap" if name == "bwrap" else None)
    assert (check.result, check.details) == (YES, {"bwrap": "/usr/bin/bwrap"})
    assert probe.check_container_tools(lambda name: None).result == NO


def test_resource_checks(tmp_path):
    assert probe.check_disk(str(tmp_path)).details["free_bytes"] > 0
    assert probe.check_disk(str(tmp_path / "missing")).result == ERROR
    assert probe.check_cpus({0, 1, 2}).result == "3"
    memory = probe.check_memory("MemTotal:  2097152 kB\nMemFree: 1 kB\nMemAvailable: 1048576 kB\n")
    assert (memory.result, memory.reason) == ("2.0 GiB", "1.0 GiB available")
    assert probe.check_memory("").result == ERROR


def test_http_proxy_check():
    def connect(host, port):
        if (host, port) != ("good.example.org", 3128):
            raise OSError(111, "Connection refused")
    assert probe.check_http_proxy("", connect).result == SKIPPED
    assert probe.check_http_proxy("DIRECT", connect).result == SKIPPED
    assert probe.check_http_proxy("bad.example.org", connect).result == ERROR  # no port
    fine = probe.check_http_proxy("http://bad.example.org:3128;good.example.org:3128|DIRECT", connect)
    assert (fine.result, fine.details["reachable"]) == (YES, ["http://good.example.org:3128"])
    bad = probe.check_http_proxy("bad.example.org:3128", connect)
    assert bad.result == NO and "Connection refused" in bad.reason


def test_a_real_proxy_is_reached():
    import socket
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert probe.check_http_proxy("127.0.0.1:{}".format(port), probe._connect).result == YES
    assert probe.check_http_proxy("127.0.0.1:{}".format(port), probe._connect).result == NO


def test_trials_run_in_a_child(tmp_path):
    assert trial.run(trial.STAT, str(tmp_path)) == {"ok": True, "entries": 0, "mode": os.stat(tmp_path).st_mode}
    missing = trial.run(trial.STAT, str(tmp_path / "missing"))
    assert missing["ok"] is False and missing["errno"] == 2


def test_a_hanging_trial_is_killed(monkeypatch):
    monkeypatch.setattr(trial, "_BOOT", "import time; time.sleep(60)")
    outcome = trial.run(trial.STAT, "/", timeout=0.5)
    assert outcome == {"ok": None, "error": "no answer within 0.5 s"}


def test_a_crashing_trial_is_reported(monkeypatch):
    monkeypatch.setattr(trial, "_BOOT", "import os; os.abort()")
    outcome = trial.run(trial.STAT, "/")
    assert outcome["ok"] is None and "status -6" in outcome["error"]


def test_repositories_under_an_existing_cvmfs(tmp_path):
    (tmp_path / "a.example.org" / "sub").mkdir(parents=True)
    (tmp_path / "b.example.org").mkdir()
    listed = probe.check_cvmfs(str(tmp_path), True, probe.answers_under(str(tmp_path), None, 10))
    assert (listed.result, listed.details["answering"]) == (YES, ["a.example.org", "b.example.org"])
    wanted = probe.answers_under(str(tmp_path), ["a.example.org", "c.example.org"], 10)
    check = probe.check_cvmfs(str(tmp_path), True, wanted)
    assert check.result == NO and check.details["answering"] == ["a.example.org"]
    assert list(check.details["failing"]) == ["c.example.org"]


def _live_probe(unprivileged, tmp_path, python=sys.executable):
    work = unprivileged.scratch(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(SRC))
    env.pop("CVMFS_HTTP_PROXY", None)
    env.pop("http_proxy", None)
    done = unprivileged.run([python, "-m", "cvmfs_pilot", "node", "probe", "--json", "--work-dir", str(work)],
                            env=env, cwd=str(work), timeout=120)
    assert done.returncode == 0, done.stderr
    return probe.Probe.from_dict(json.loads(done.stdout)), work


def _assert_this_machine(found, work):
    """What this machine really has (see README and scripts/setup-tests.sh)."""
    assert found.result("os") == "debian12"
    assert found.result("arch") == os.uname().machine
    assert found["kernel"].details["userns_fuse"] is True
    assert found.result("user_namespaces") == YES
    assert found.glidein_attributes() == {"HAS_UNPRIVILEGED_USER_NAMESPACES": "enabled"}
    assert found.result("dev_fuse") == YES and found["dev_fuse"].details["mode"] == "666"
    assert found.result("fuse_in_user_namespace") == YES
    assert found.result("fusermount") == YES and found["fusermount"].details["path"].endswith("fusermount3")
    assert found.result("cvmfs") == (YES if os.path.isdir("/cvmfs") and os.listdir("/cvmfs") else NO)
    assert found.result("proc_masked") == NO
    assert found.result("http_proxy") == SKIPPED
    assert found.result("cpus") == str(len(os.sched_getaffinity(0)))
    assert found["disk"].details["path"] == str(work)
    assert os.listdir(str(work)) == []  # the trials left nothing behind


def test_live_probe_as_the_unprivileged_user(unprivileged, tmp_path):
    found, work = _live_probe(unprivileged, tmp_path)
    _assert_this_machine(found, work)


def _probe_command(python, *args):
    return subprocess.run([python, "-m", "cvmfs_pilot", "node", "probe"] + list(args),
                          env=dict(os.environ, PYTHONPATH=str(SRC)), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


@pytest.mark.skipif(not os.path.exists(PYTHON36), reason="no Python 3.6 at " + PYTHON36)
def test_live_probe_under_python36(tmp_path):
    """As the current user: the test user cannot reach pyenv's interpreter under /root."""
    done = _probe_command(PYTHON36, "--json", "--work-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    found = probe.Probe.from_dict(json.loads(done.stdout))
    assert (found.result("os"), found.result("user_namespaces"), found.result("fuse_in_user_namespace")) == \
        ("debian12", YES, YES)
    assert os.listdir(str(tmp_path)) == []


def test_live_probe_prints_reasons(tmp_path):
    done = _probe_command(sys.executable, "--work-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "user_namespaces" in done.stdout and "HAS_UNPRIVILEGED_USER_NAMESPACES = enabled" in done.stdout
