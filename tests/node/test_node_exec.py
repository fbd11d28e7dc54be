"""``node exec`` and ``node cleanup`` for real, as the unprivileged user, on this machine that has no /cvmfs:
every mode the host allows, the config repository first, $CVMFSMOUNT, signals, kill -9, many pilots at once,
and bad input. Each test fails if anything of a pilot is left running, mounted or on disk (see the exec_env
fixture)."""

import os
import signal
import subprocess

import pytest

from support.exec_env import CONFIG_REPO, MANY_FILES, ONE, TWO, kill9, wait_for_file
from support.fuse_env import fuse_mounts_below, user_processes

MODES = ["userns", "fusermount"]


@pytest.fixture(autouse=True)
def _host_has_no_cvmfs():
    assert not os.path.exists("/cvmfs"), "these tests show /cvmfs appearing for the job on a host without it"


def _path(mode, repository, name):
    """A path of a repository as the job sees it in each mode."""
    base = "/cvmfs" if mode == "userns" else "$CVMFS_MOUNT_DIR"
    return '"{}/{}/{}"'.format(base, repository, name)


def test_userns_mode_gives_the_job_cvmfs_with_its_own_ids(exec_env):
    uid = exec_env.unprivileged.uid
    gid = exec_env.unprivileged.user.pw_gid if exec_env.unprivileged.user else os.getgid()
    script = ("cat /cvmfs/{0}/hello.txt && /cvmfs/{0}/bin/tool.sh && id -u && id -g && "
              "echo \"mount dir: ${{CVMFS_MOUNT_DIR:-unset}}\" && pwd && "
              "grep -c ' fuse' /proc/self/mountinfo; echo $(ls /cvmfs); exit 7").format(ONE)
    result = exec_env.run(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", "userns"))
    assert result.returncode == 7, result.stderr
    assert result.stdout.splitlines() == [
        "hello from one", "tool of one", str(uid), str(gid), "mount dir: unset", str(exec_env.scratch),
        "2",  # the config repository and one are the job's FUSE mounts
        " ".join(sorted([CONFIG_REPO, ONE]))]


@pytest.mark.parametrize("pid_namespace", ["yes", "no"])
def test_userns_mode_with_and_without_a_pid_namespace(exec_env, pid_namespace):
    script = "cat /cvmfs/{}/hello.txt; readlink /proc/self/ns/pid".format(ONE)
    result = exec_env.run(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", "userns",
                                                "--pid-namespace", pid_namespace))
    assert result.returncode == 0, result.stderr
    content, job_pid_namespace = result.stdout.splitlines()
    assert content == "hello from one"
    assert (job_pid_namespace != os.readlink("/proc/self/ns/pid")) == (pid_namespace == "yes")


def test_fusermount_mode_exports_the_mount_directory(exec_env):
    script = 'echo "$CVMFS_MOUNT_DIR"; cat "$CVMFS_MOUNT_DIR/{}/hello.txt"'.format(ONE)
    result = exec_env.run(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", "fusermount"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(exec_env.work / "cvmfs"), "hello from one"]


def test_the_mode_is_chosen_automatically(exec_env):
    result = exec_env.run(exec_env.exec_command(["cat", "/cvmfs/{}/hello.txt".format(ONE)], [ONE], "-v"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from one\n"
    assert "mode userns, engine python" in result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_the_config_repository_is_mounted_first_and_configures_the_others(exec_env, mode):
    """two.exec.test is configured only by a file inside the config repository."""
    result = exec_env.run(exec_env.exec_command(["sh", "-c", "cat " + _path(mode, TWO, "greeting.txt")], [TWO],
                                                "--mode", mode, "-v"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "greetings from two\n"
    mounted = [line for line in result.stderr.splitlines() if "mounted " in line]
    assert len(mounted) == 2 and CONFIG_REPO in mounted[0] and TWO in mounted[1], result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_the_job_mounts_and_unmounts_more_repositories(exec_env, mode):
    script = ('set -e; "$CVMFSMOUNT" {two}; cat {greeting}; "$CVMFSMOUNT" {two}; "$CVMFSUMOUNT" {two}; '
              'if cat {greeting} 2>/dev/null; then echo still there; exit 1; fi; '
              'if "$CVMFSMOUNT" no-such.repository.test 2>err; then exit 1; fi; cat err >&2; '
              'if "$CVMFSUMOUNT" {config} 2>err; then exit 1; fi; cat err >&2; '
              'cat {hello}').format(two=TWO, config=CONFIG_REPO, greeting=_path(mode, TWO, "greeting.txt"),
                                    hello=_path(mode, ONE, "hello.txt"))
    result = exec_env.run(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", mode))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "greetings from two" in result.stdout and "hello from one" in result.stdout
    assert "no-such.repository.test" in result.stderr
    assert "config repository" in result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_signals_reach_the_job(exec_env, mode):
    marker = exec_env.scratch / "started"
    script = "trap 'echo got TERM; exit 5' TERM; touch {}; while :; do sleep 0.1; done".format(marker)
    pilot = exec_env.popen(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", mode))
    wait_for_file(marker)
    pilot.send_signal(signal.SIGTERM)
    out, err = pilot.communicate(timeout=60)
    assert pilot.returncode == 5, err
    assert out == "got TERM\n"


@pytest.mark.parametrize("mode", MODES)
def test_kill_9_of_the_pilot_leaves_nothing(exec_env, mode):
    marker = exec_env.scratch / "started"
    script = "touch {}; sleep 300 & cat {}; wait".format(marker, _path(mode, ONE, "hello.txt"))
    pilot = exec_env.popen(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", mode))
    wait_for_file(marker)
    kill9(pilot.pid)
    pilot.wait(timeout=30)
    if mode == "fusermount":  # mounts and the job's processes outlive the pilot; node cleanup removes them
        result = exec_env.run(exec_env.node("cleanup", "--work-dir", str(exec_env.work)))
        assert result.returncode == 0, result.stderr
        assert "unmounted {}".format(exec_env.work / "cvmfs" / ONE) in result.stdout
        assert "ended process" in result.stdout  # the job's background sleep
        again = exec_env.run(exec_env.node("cleanup", "--work-dir", str(exec_env.work)))
        assert (again.returncode, again.stdout) == (0, ""), again.stderr
    pilot.communicate(timeout=30)  # the job's background process held the pipes until now
    exec_env.assert_clean()


def test_a_new_pilot_cleans_up_after_a_killed_one(exec_env):
    marker = exec_env.scratch / "started"
    pilot = exec_env.popen(exec_env.exec_command(["sh", "-c", "touch {}; sleep 300".format(marker)], [ONE],
                                                 "--mode", "fusermount"))
    wait_for_file(marker)
    kill9(pilot.pid)
    pilot.wait(timeout=30)
    result = exec_env.run(exec_env.exec_command(["cat", _path("fusermount", ONE, "hello.txt").strip('"').replace(
        "$CVMFS_MOUNT_DIR", str(exec_env.work / "cvmfs"))], [ONE], "--mode", "fusermount"))
    assert (result.returncode, result.stdout) == (0, "hello from one\n"), result.stderr
    pilot.communicate(timeout=30)


def test_cleanup_refuses_to_run_beside_a_live_pilot(exec_env):
    marker = exec_env.scratch / "started"
    pilot = exec_env.popen(exec_env.exec_command(["sh", "-c", "touch {}; sleep 300".format(marker)], [ONE],
                                                 "--mode", "fusermount"))
    try:
        wait_for_file(marker)
        result = exec_env.run(exec_env.node("cleanup", "--work-dir", str(exec_env.work)))
        assert result.returncode == 1
        assert "another pilot (pid {}) is running".format(pilot.pid) in result.stderr
        second = exec_env.run(exec_env.exec_command(["true"], [ONE], "--mode", "fusermount"))
        assert second.returncode == 1 and "another pilot" in second.stderr
        assert str(exec_env.work / "cvmfs" / ONE) in fuse_mounts_below(exec_env.work)  # untouched
    finally:
        pilot.terminate()
        pilot.communicate(timeout=60)


def test_eight_pilots_at_once_share_one_cache(exec_env):
    pilots = []
    for number in range(8):
        work = exec_env.scratch / "work-{}".format(number)
        mode = "userns" if number % 2 == 0 else "fusermount"
        script = "cat {} {}".format(_path(mode, ONE, "data/big.bin"), _path(mode, TWO, "greeting.txt"))
        command = exec_env.node("exec", "--work-dir", str(work), "--config-dir", str(exec_env.etc),
                                "--repos", ",".join([ONE, TWO]), "--mode", mode, "--", "sh", "-c", script)
        pilots.append(exec_env.popen(command, stdout=subprocess.PIPE, universal_newlines=False))
    outputs = [pilot.communicate(timeout=240) for pilot in pilots]
    big = None
    for pilot, (out, err) in zip(pilots, outputs):
        assert pilot.returncode == 0, err
        assert out.endswith(b"greetings from two\n")
        big = big or out
        assert out == big  # every pilot read the same bytes
        assert len(out) == 300_000 + len("greetings from two\n")
    for number in range(8):
        assert not os.path.exists(exec_env.scratch / "work-{}".format(number) / ".cvmfs-pilot")


def test_export_mode_copies_the_declared_subtrees(exec_env):
    script = 'cd "$CVMFS_MOUNT_DIR/{}" && find . -type f | sort && cat hello.txt'.format(ONE)
    result = exec_env.run(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", "export", "--subtree",
                                                ONE + "/data", "--subtree", ONE + "/hello.txt"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["./data/big.bin", "./hello.txt", "hello from one"]


def test_export_mode_writes_a_large_subtree_with_worker_processes_and_leaves_none(exec_env):
    script = 'cd "$CVMFS_MOUNT_DIR/{}/many" && cat f*'.format(ONE)
    result = exec_env.run(exec_env.exec_command(["sh", "-c", script], [ONE], "--mode", "export", "--subtree",
                                                ONE + "/many", "-v"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join("{}\n".format(i) for i in range(MANY_FILES))
    assert "worker processes" in result.stderr
    assert [p for p in user_processes(exec_env.unprivileged.uid) if "cvmfs_pilot" in p[1]] == []


# -- bad input ------------------------------------------------------------------------------------------------

def test_a_repository_that_cannot_be_mounted_fails_clearly_and_leaves_nothing(exec_env):
    result = exec_env.run(exec_env.exec_command(["touch", str(exec_env.scratch / "ran")],
                                                ["missing.exec.test"], "--mode", "userns"))
    assert result.returncode == 3
    assert "missing.exec.test" in result.stderr and "the job did not run" in result.stderr
    assert not (exec_env.scratch / "ran").exists()


def test_preferred_runs_the_job_without_cvmfs_when_mounting_fails(exec_env):
    result = exec_env.run(exec_env.exec_command(["sh", "-c", "echo ran; ls /cvmfs 2>&1 | head -1"],
                                                ["missing.exec.test"], "--require", "preferred"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ran\n")
    assert "mode userns failed" in result.stderr and "mode fusermount failed" in result.stderr


def test_a_job_that_cannot_be_executed(exec_env):
    result = exec_env.run(exec_env.exec_command(["/no/such/program"], [ONE], "--mode", "userns"))
    assert result.returncode == 127
    assert "/no/such/program" in result.stderr


@pytest.mark.parametrize("arguments, message", [
    (["--repos", ONE, "--mode", "userns"], "give the command to run after --"),
    (["--repos", "not a name", "--mode", "userns", "--", "true"], "is not a repository name"),
    (["--repos", ONE, "-o", "NOEQUALS", "--", "true"], "give KEY=VALUE"),
    (["--repos", ONE, "--staging", "http://127.0.0.1:9/", "--", "true"], "--staging needs --index-sha256"),
])
def test_bad_arguments(exec_env, arguments, message):
    result = exec_env.run(exec_env.node("exec", "--work-dir", str(exec_env.work), "--config-dir",
                                        str(exec_env.etc), *arguments))
    assert result.returncode in (2, 3)
    assert message in result.stderr


def test_requests_outside_a_pilot_are_refused(exec_env):
    result = exec_env.run(exec_env.node("request", "mount", ONE), env={"CVMFS_PILOT_CONTROL": ""})
    assert result.returncode == 2 and "run this inside 'cvmfs-pilot node exec'" in result.stderr
    result = exec_env.run(exec_env.node("request", "--socket", str(exec_env.scratch / "nothing.sock"), "mount",
                                        ONE))
    assert result.returncode == 1 and "cannot reach the pilot" in result.stderr
