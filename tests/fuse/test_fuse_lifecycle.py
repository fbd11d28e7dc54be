"""A mount's life as the unprivileged user: starting in the background or the foreground, configuration files and
logs, errors, SIGTERM, kill -9 (ENOTCONN until ``fs umount``), busy unmounts, a slow server and interrupted
requests, and a new revision published while mounted."""

import json
import os
import select
import signal
import subprocess
import time

from support.fuse_env import FS, PYTHON, fuse_mounts_below, wait_for
from support.http_faults import ContentServer


def _read_line(process, timeout):
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else ""


def test_kill_9_leaves_enotconn_until_fs_umount(fuse_env):
    env = fuse_env
    mounted = env.fs("mount", env.fqrn, "mnt")
    assert mounted.returncode == 0, mounted.stderr
    assert mounted.stdout == "mounted {} (revision 1) on {}\n".format(env.fqrn, env.mnt)
    assert env.sh("cat mnt/README.txt").stdout == "a tree for the FUSE tests\n"
    servers = env.server_pids(env.mnt)
    assert len(servers) == 1
    os.kill(servers[0], signal.SIGKILL)
    assert wait_for(lambda: not env.server_pids(env.mnt), 5)
    dead = env.sh("stat mnt")
    assert dead.returncode != 0 and "Transport endpoint is not connected" in dead.stderr
    assert fuse_mounts_below(env.scratch) == [str(env.mnt)]
    cleared = env.fs("umount", "mnt")
    assert cleared.returncode == 0, cleared.stderr
    assert fuse_mounts_below(env.scratch) == []
    assert env.sh("stat mnt").returncode == 0


def test_foreground_server_unmounts_on_sigterm(fuse_env):
    env = fuse_env
    server = env.popen(FS + ["mount", "-f", "--config-dir", str(env.config_dir), env.fqrn, "mnt"])
    try:
        assert _read_line(server, 30).startswith("mounted {}".format(env.fqrn))
        assert env.sh("ls mnt/many | wc -l").stdout.strip() == "400"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0, server.stderr.read()
        assert fuse_mounts_below(env.scratch) == []
    finally:
        server.kill()
        server.wait()


def test_busy_mount_is_detached_lazily(fuse_env):
    env = fuse_env
    assert env.fs("mount", env.fqrn, "mnt").returncode == 0
    inside = env.popen(["sh", "-c", "cd mnt/deep/a && echo in && exec sleep 60"])
    try:
        assert _read_line(inside, 10) == "in\n"
        result = env.fs("umount", "mnt")
        assert result.returncode == 0 and "detached it lazily" in result.stderr
        assert fuse_mounts_below(env.scratch) == []
        assert env.server_pids(env.mnt)  # still serving the process inside
    finally:
        inside.kill()
        inside.wait()
    assert wait_for(lambda: not env.server_pids(env.mnt), 10)


def test_configuration_file_logs_and_errors(fuse_env):
    env = fuse_env
    out = env.scratch / "out"
    config = env.scratch / "one.conf"
    config.write_text("CVMFS_SERVER_URL={}/@fqrn@\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_PUBLIC_KEY={}\n"
                      "CVMFS_CACHE_BASE={}\nCVMFS_USYSLOG={}\nCVMFS_DEBUGLOG={}\n".format(
                          env.base_url, env.config_dir / "keys" / (env.fqrn + ".pub"), env.scratch / "cache",
                          out / "messages.log", out / "debug.log"))
    only_file = ["--config-dir", str(env.scratch / "no-such-dir")]
    mounted = env.unprivileged.run(FS + ["mount", "-o", "config=one.conf"] + only_file + [env.fqrn, "mnt"],
                                   cwd=str(env.scratch))
    assert mounted.returncode == 0, mounted.stderr
    assert env.sh("cat mnt/nested/inner/file.txt").stdout == "in a nested catalog\n"
    assert env.fs("umount", "mnt").returncode == 0
    assert wait_for(lambda: not env.server_pids(env.mnt), 5)
    assert "mounted {} revision 1".format(env.fqrn) in (out / "messages.log").read_text()
    debug = (out / "debug.log").read_text()
    assert "LOOKUP nodeid 1" in debug and "READ nodeid" in debug and "FUSE 7." in debug

    bad_option = env.fs("mount", "-o", "nonsense", env.fqrn, "mnt")
    assert bad_option.returncode == 1 and "unknown mount option 'nonsense'" in bad_option.stderr
    missing = env.unprivileged.run(FS + ["mount", "-o", "config=missing.conf"] + only_file + [env.fqrn, "mnt"],
                                   cwd=str(env.scratch))
    assert missing.returncode == 1 and "missing.conf (-o config=) does not exist" in missing.stderr
    unknown = env.fs("mount", "other.example.org", "mnt")
    assert unknown.returncode == 1 and "CVMFS_SERVER_URL is not set" in unknown.stderr
    no_dir = env.fs("mount", env.fqrn, "no-such-mountpoint")
    assert no_dir.returncode == 1 and "could not mount" in no_dir.stderr
    not_mounted = env.fs("umount", "mnt")
    assert not_mounted.returncode == 1 and "is not a mount point" in not_mounted.stderr
    assert fuse_mounts_below(env.scratch) == []


INTERRUPTIBLE_STAT = """
import os, signal, sys, time
class Interrupted(Exception):
    pass
def interrupt(*args):
    raise Interrupted()
signal.signal(signal.SIGALRM, interrupt)
signal.alarm(1)
start = time.monotonic()
try:
    os.stat(sys.argv[1])
    print("not interrupted")
except Interrupted:
    print("interrupted after %.1f s" % (time.monotonic() - start))
"""


def test_slow_server_blocks_only_what_it_must_and_interrupts_work(fuse_env):
    env = fuse_env
    files = {}
    for directory, _, names in os.walk(str(env.storage)):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files["/" + env.fqrn + "/" + os.path.relpath(path, str(env.storage))] = f.read()
    with ContentServer(files) as server:
        config = env.configure(env.scratch / "etc-slow", server_url=server.url + "/@fqrn@",
                               extra={"CVMFS_TIMEOUT": 60, "CVMFS_TIMEOUT_DIRECT": 60})
        assert env.fs("mount", env.fqrn, "mnt", config_dir=config).returncode == 0
        try:
            assert env.sh("cat mnt/README.txt").returncode == 0
            server.delay = 8  # seconds; a stalled object stays stalled for later readers too
            slow_read = env.popen(["cat", "mnt/data/two-mb.bin"], stdout=subprocess.DEVNULL)
            slow_lookup = env.popen(["stat", "mnt/nested/inner/file.txt"])
            time.sleep(1)
            assert slow_read.poll() is None and slow_lookup.poll() is None  # both wait for the server
            start = time.monotonic()
            cached = env.sh("cat mnt/README.txt && ls -l mnt/many | wc -l")
            assert cached.stdout == "a tree for the FUSE tests\n401\n"
            assert time.monotonic() - start < 3

            start = time.monotonic()
            slow_lookup.send_signal(signal.SIGTERM)  # fatal: the process waits for the INTERRUPT's answer
            slow_read.kill()
            slow_lookup.wait(timeout=10)
            slow_read.wait(timeout=10)
            assert time.monotonic() - start < 3
            handled = env.unprivileged.run([PYTHON, "-c", INTERRUPTIBLE_STAT, "mnt/nested/inner/file.txt"],
                                           cwd=str(env.scratch), timeout=30)
            assert handled.stdout.startswith("interrupted after 1."), handled.stdout + handled.stderr

            server.delay = 0
            assert env.sh("cat mnt/nested/inner/file.txt").stdout == "in a nested catalog\n"
        finally:
            assert env.fs("umount", "mnt").returncode == 0
    assert wait_for(lambda: not env.server_pids(env.mnt), 10)


WATCH_REVISIONS = """
import json, os, sys, time
mnt = sys.argv[1]
old = open(mnt + "/data/small.bin", "rb")
first = old.read()
before = dict(listing=sorted(os.listdir(mnt + "/data")), new=os.path.exists(mnt + "/data/new.txt"),
              link=os.readlink(mnt + "/links/relative"), changed=open(mnt + "/data/changed.txt").read())
print("ready", flush=True)
deadline = time.monotonic() + 30
while open(mnt + "/data/changed.txt").read() == before["changed"] and time.monotonic() < deadline:
    time.sleep(0.2)
old.seek(0)
after = dict(listing=sorted(os.listdir(mnt + "/data")), new=os.path.exists(mnt + "/data/new.txt"),
             link=os.readlink(mnt + "/links/relative"), changed=open(mnt + "/data/changed.txt").read(),
             old_fd_unchanged=old.read() == first, small_changed=open(mnt + "/data/small.bin", "rb").read() != first,
             revision=os.getxattr(mnt + "/data/changed.txt", "user.revision").decode(),
             waited=round(30 - (deadline - time.monotonic()), 1))
print(json.dumps(dict(before=before, after=after)))
"""


def test_new_revision_appears_while_mounted(make_fuse_env):
    env = make_fuse_env(ttl=1)
    (env.src / "data" / "changed.txt").write_text("first\n")
    (env.src / "data" / "gone.txt").write_text("gone soon\n")
    env.publish()
    env.unprivileged.own(env.src)
    assert env.fs("mount", env.fqrn, "mnt").returncode == 0
    try:
        watcher = env.popen([PYTHON, "-c", WATCH_REVISIONS, str(env.mnt)])
        assert _read_line(watcher, 30) == "ready\n"
        (env.src / "data" / "changed.txt").write_text("second revision\n")
        (env.src / "data" / "new.txt").write_text("new\n")
        (env.src / "data" / "gone.txt").unlink()
        (env.src / "data" / "small.bin").write_bytes(os.urandom(1000))  # same size, other content
        os.unlink(str(env.src / "links" / "relative"))
        os.symlink("../data/tagged.txt", str(env.src / "links" / "relative"))
        env.publish()
        output, errors = watcher.communicate(timeout=60)
        report = json.loads(output)
        before, after = report["before"], report["after"]
        assert before["new"] is False and "gone.txt" in before["listing"]
        assert after["changed"] == "second revision\n", (after, errors)
        assert after["listing"] == sorted(set(before["listing"]) - {"gone.txt"} | {"new.txt"})
        assert after["new"] is True and after["link"] == "../data/tagged.txt"
        assert after["old_fd_unchanged"] and after["small_changed"] and after["revision"] == "3"
        assert after["waited"] < 10
    finally:
        assert env.fs("umount", "mnt").returncode == 0
