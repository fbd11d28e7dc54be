"""``node exec`` with a fetched client distribution: the cvmfs2 engine driven through its command-line contract
(a distribution built by our builder whose cvmfs2 is our engine, since the upstream binary cannot run on this
Debian machine), a tampered distribution, and the fallback to fusermount on a node where unprivileged user
namespaces are disabled."""

import os
import shutil
import subprocess
import sys

import pytest

from support import no_userns
from support.exec_env import ONE

MODES = ["userns", "fusermount"]
# The job: print the repository's hello.txt, then how many processes serve its mount point through the
# distribution's cvmfs2 (whose script runs our zipapp as: python3 <pyz> fs mount -f -o config=F FQRN MOUNTPOINT).
SERVERS_OF = """
import os, sys
mountpoint = sys.argv[1]
print(open(os.path.join(mountpoint, "hello.txt")).read(), end="")
count = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open("/proc/%s/cmdline" % pid, "rb").read().decode().split("\\0")[:-1]
    except OSError:
        continue
    if len(argv) > 5 and argv[1].endswith("/libexec/cvmfs-pilot/cvmfs-pilot.pyz") and argv[2:6] == [
            "fs", "mount", "-f", "-o"] and argv[-1] == mountpoint:
        count += 1
print(count)
"""
MAX_USER_NAMESPACES = "/proc/sys/user/max_user_namespaces"


def _staging_options(exec_env, url, index_sha256, *more):
    return ["--staging", url, "--index-sha256", index_sha256, "--cache", str(exec_env.scratch / "dists"),
            "-o", "CVMFS_HTTP_PROXY=DIRECT", "-o", "CVMFS_SERVER_URL={}/@fqrn@".format(exec_env.base_url),
            "-o", "CVMFS_KEYS_DIR={}".format(exec_env.etc / "keys"), *more]


def _exec(exec_env, job, *options):
    """node exec without --config-dir: the configuration is the distribution's, with -o overrides."""
    return exec_env.node("exec", "--work-dir", str(exec_env.work), "--repos", ONE, *options, "--", *job)


@pytest.mark.parametrize("mode", MODES)
def test_the_cvmfs2_engine_is_driven_through_its_command_line(exec_env, contract_staging, nginx, mode):
    url = nginx(contract_staging.directory.parent) + "/" + contract_staging.directory.name + "/"
    mountpoint = "/cvmfs/" + ONE if mode == "userns" else str(exec_env.work / "cvmfs" / ONE)
    result = exec_env.run(_exec(exec_env, [sys.executable, "-c", SERVERS_OF, mountpoint], "--mode", mode,
                                "--engine", "cvmfs2", "-v",
                                *_staging_options(exec_env, url, contract_staging.index_sha256)),
                          env={"CVMFS_PILOT_PYTHON": "/usr/bin/python3"})
    assert result.returncode == 0, result.stderr
    # the repository's file, and the one server (our engine behind the distribution's cvmfs2) that serves it
    assert result.stdout.splitlines() == ["hello from one", "1"], result.stderr
    assert "mode {}, engine cvmfs2".format(mode) in result.stderr
    cached = os.listdir(exec_env.scratch / "dists")
    assert contract_staging.entry["sha256"] in cached  # kept for the next pilot on this node


def test_a_tampered_distribution_is_refused_and_the_job_does_not_run(exec_env, contract_staging, nginx, tmp_path):
    staging = tmp_path / "served" / "staging"
    shutil.copytree(contract_staging.directory, staging)
    tarball = staging / (contract_staging.entry["name"] + ".tar.gz")
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0x01
    tarball.write_bytes(bytes(data))
    url = nginx(staging.parent) + "/staging/"
    ran = exec_env.scratch / "ran"
    result = exec_env.run(_exec(exec_env, ["touch", str(ran)], "--mode", "userns", "--engine", "cvmfs2",
                                *_staging_options(exec_env, url, contract_staging.index_sha256)))
    assert result.returncode == 2
    assert "refused" in result.stderr and contract_staging.entry["sha256"] in result.stderr
    assert not ran.exists()
    dists = exec_env.scratch / "dists"
    assert contract_staging.entry["sha256"] not in os.listdir(dists)
    assert not [name for name in os.listdir(dists) if name.startswith(".unpack") or name.endswith(".tar.gz")]


def test_a_wrong_index_hash_is_refused(exec_env, contract_staging, nginx):
    url = nginx(contract_staging.directory.parent) + "/" + contract_staging.directory.name + "/"
    result = exec_env.run(_exec(exec_env, ["true"], "--mode", "userns",
                                *_staging_options(exec_env, url, "0" * 64)))
    assert result.returncode == 2
    assert "0" * 64 in result.stderr


def _can_write(path):
    try:
        with open(path, "r+") as handle:
            handle.write(handle.read())
        return True
    except OSError:
        return False


@pytest.fixture
def without_user_namespaces(exec_env):
    """Run the pilot on a node that refuses unprivileged user namespaces: user.max_user_namespaces = 0 for the
    test's duration, as on a RHEL 7 node, where root may set it; otherwise (root lacks CAP_SYS_RESOURCE in a
    sandboxed VM) a seccomp filter that refuses them, as a site policy does (support/no_userns.py). Either way
    setuid fusermount keeps working, as it does on such a node. Returns how to wrap the pilot's command."""
    user = exec_env.unprivileged.user
    if os.geteuid() != 0 or user is None:
        pytest.skip("needs root, to restrict the test user")
    if not _can_write(MAX_USER_NAMESPACES):
        yield lambda argv: no_userns.command(user.pw_uid, user.pw_gid, argv)
        return
    with open(MAX_USER_NAMESPACES) as handle:
        previous = handle.read().strip()
    with open(MAX_USER_NAMESPACES, "w") as handle:
        handle.write("0")
    try:
        yield lambda argv: argv
    finally:
        with open(MAX_USER_NAMESPACES, "w") as handle:
            handle.write(previous)


def test_without_user_namespaces_the_pilot_falls_back_to_fusermount(exec_env, without_user_namespaces):
    script = 'echo "$CVMFS_MOUNT_DIR"; cat "$CVMFS_MOUNT_DIR/{}/hello.txt"'.format(ONE)
    command = without_user_namespaces(exec_env.exec_command(["sh", "-c", script], [ONE], "-v"))
    result = subprocess.run(command, cwd=str(exec_env.scratch), env=exec_env.environ(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(exec_env.work / "cvmfs"), "hello from one"]
    assert "mode userns: not available" in result.stderr
    assert "mode fusermount, engine python" in result.stderr
