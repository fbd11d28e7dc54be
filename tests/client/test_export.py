"""Exporting a subtree (``fs get``): by threads of one process and by worker processes; failures of a worker stop
the export with its message; the exported files are copies, never links to the shared cache; the cache stays
consistent, also with several exports at once."""

import contextlib
import errno
import multiprocessing
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from cvmfs_pilot.client import export as export_module
from cvmfs_pilot.client import repository as repository_module

from support.client_env import open_with, publish_and_serve
from support.fuse_env import user_processes

FQRN = "export.example.org"
FILES = 40


def _tree(root):
    (root / "a" / "b").mkdir(parents=True)
    for i in range(FILES):
        directory = root / ("a" if i % 3 else "a/b")
        (directory / "f{}.txt".format(i)).write_bytes("file {}\n".format(i).encode() * (i * 50 + 1))
        os.chmod(str(directory / "f{}.txt".format(i)), 0o755 if i % 2 else 0o640)
    (root / "same1").write_bytes(b"same content\n")  # two files, one object
    (root / "same2").write_bytes(b"same content\n")
    (root / "big.bin").write_bytes(os.urandom(100_000))  # chunked with the small test chunk sizes
    (root / "empty").write_bytes(b"")
    os.symlink("a/f1.txt", str(root / "link"))
    os.chmod(str(root / "a" / "b"), 0o750)
    return root


@pytest.fixture
def served(tmp_path, nginx):
    src = _tree(tmp_path / "src")
    served = publish_and_serve(src, FQRN, tmp_path, nginx, tmp_path / "etc", tmp_path / "cache")
    return dict(served, src=src, cache=tmp_path / "cache" / "shared", tmp=tmp_path)


@pytest.fixture
def forking(monkeypatch):
    """Worker processes even for a small tree; the list of their pids."""
    monkeypatch.setattr(export_module, "FORK_THRESHOLD", 4)
    monkeypatch.setattr(export_module, "TASK_BATCH", 2)
    pids = []
    fork = os.fork

    def recording_fork():
        pid = fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", recording_fork)
    return pids


def _assert_same_tree(src, out):
    count = 0
    for dirpath, dirnames, filenames in os.walk(str(src)):
        for name in dirnames + filenames:
            source = os.path.join(dirpath, name)
            exported = os.path.join(str(out), os.path.relpath(source, str(src)))
            expected, got = os.lstat(source), os.lstat(exported)
            assert stat.S_IFMT(got.st_mode) == stat.S_IFMT(expected.st_mode), exported
            if stat.S_ISLNK(expected.st_mode):
                assert os.readlink(exported) == os.readlink(source)
            else:
                assert stat.S_IMODE(got.st_mode) == stat.S_IMODE(expected.st_mode), exported
                assert got.st_mtime_ns == expected.st_mtime_ns, exported
            if stat.S_ISREG(expected.st_mode):
                with open(source, "rb") as a, open(exported, "rb") as b:
                    assert a.read() == b.read(), exported
            count += 1
    return count


def _assert_cache_consistent(cache, killed=False):
    """Every object file recorded and every record with its file; nothing left in txn/ unless a process was
    ``killed`` (its temporary files are removed by a later Cache() once an hour old)."""
    with contextlib.closing(sqlite3.connect(str(cache / "cachedb"))) as db:
        recorded = {row[0]: row[1] for row in db.execute("SELECT hash, size FROM objects")}
        totals = db.execute("SELECT bytes, objects FROM totals").fetchone()
    on_disk = {}
    for fan in ("{:02x}".format(i) for i in range(256)):
        for name in os.listdir(str(cache / fan)):
            on_disk[fan + name] = os.path.getsize(str(cache / fan / name))
    assert on_disk == recorded
    assert totals == (sum(recorded.values()), len(recorded))
    if not killed:
        assert os.listdir(str(cache / "txn")) == []
    return recorded


def _all_reaped(pids):
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@pytest.mark.parametrize("processes", [1, 3])
def test_an_export_copies_the_tree_cold_and_warm(served, forking, processes):
    with open_with(served["config"], FQRN) as repository:
        report = export_module.export(repository, "/", str(served["tmp"] / "cold"), processes=processes)
    assert len(forking) == (processes if processes > 1 else 0)
    _all_reaped(forking)
    assert _assert_same_tree(served["src"], served["tmp"] / "cold") == FILES + 7
    assert (report.files, report.symlinks, report.directories) == (FILES + 4, 1, 3)
    assert report.bytes == sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(str(served["src"]))
                               for n in names if not os.path.islink(os.path.join(d, n)))
    cached = _assert_cache_consistent(served["cache"])
    with open_with(served["config"], FQRN) as repository:  # warm: everything from the cache
        os.rename(str(served["storage"] / "data"), str(served["storage"] / "data.away"))
        try:
            export_module.export(repository, "/", str(served["tmp"] / "warm"), processes=processes)
        finally:
            os.rename(str(served["storage"] / "data.away"), str(served["storage"] / "data"))
    _assert_same_tree(served["src"], served["tmp"] / "warm")
    assert _assert_cache_consistent(served["cache"]) == cached


def test_no_worker_process_is_forked_while_another_connection_has_the_cache_database_open(served, forking):
    """A child would inherit SQLite's record of that connection's locks, without the locks (Cache.closed_for_fork)."""
    with open_with(served["config"], FQRN) as repository:
        with contextlib.closing(sqlite3.connect(str(served["cache"] / "cachedb"))) as other:
            other.execute("SELECT COUNT(*) FROM objects").fetchall()
            export_module.export(repository, "/", str(served["tmp"] / "out"), processes=3)
    assert forking == []
    _assert_same_tree(served["src"], served["tmp"] / "out")
    _assert_cache_consistent(served["cache"])


def test_exported_files_are_copies_not_links_to_the_cache(served, forking):
    with open_with(served["config"], FQRN) as repository:
        export_module.export(repository, "/", str(served["tmp"] / "out"), processes=2)
        entry, _ = repository.entry("/a/f1.txt")
        cached = repository.objects.cache.path_of(entry.hash)
    exported = served["tmp"] / "out" / "a" / "f1.txt"
    before = os.stat(cached)
    assert os.stat(str(exported)).st_nlink == 1 and before.st_nlink == 1
    assert os.stat(str(exported)).st_ino != before.st_ino
    os.chmod(str(exported), 0o777)
    with open(str(exported), "ab") as f:
        f.write(b"changed by the user\n")
    after = os.stat(cached)
    assert (stat.S_IMODE(after.st_mode), after.st_size, after.st_mtime_ns) == (0o600, before.st_size,
                                                                                before.st_mtime_ns)
    with open_with(served["config"], FQRN) as repository:
        assert repository.read("/a/f1.txt") == (served["src"] / "a" / "f1.txt").read_bytes()


@pytest.mark.parametrize("processes", [1, 3])
def test_an_existing_file_stops_the_export(served, forking, processes):
    out = served["tmp"] / "out"
    out.mkdir()
    (out / "same2").write_bytes(b"mine")
    with open_with(served["config"], FQRN) as repository:
        with pytest.raises(FileExistsError) as raised:
            export_module.export(repository, "/", str(out), processes=processes)
    assert str(out / "same2") in str(raised.value)
    assert (out / "same2").read_bytes() == b"mine"
    _all_reaped(forking)


@pytest.mark.parametrize("processes", [1, 3])
def test_a_corrupted_object_fails_the_export_and_its_bytes_are_never_exposed(served, forking, processes):
    with open_with(served["config"], FQRN) as repository:
        entry, _ = repository.entry("/a/f5.txt")
    stored = served["storage"] / entry.hash.object_path()
    stored.write_bytes(stored.read_bytes()[:-1] + b"X")
    out = served["tmp"] / "out"
    with open_with(served["config"], FQRN) as repository:
        with pytest.raises(OSError) as raised:  # DownloadError, or RepositoryError from a worker process
            export_module.export(repository, "/", str(out), processes=processes)
        assert raised.value.errno == errno.EIO and "content hash mismatch" in str(raised.value)
        assert repository.objects.cache.open(entry.hash) is None
    _all_reaped(forking)
    target = out / "a" / "f5.txt"
    assert not target.exists() or target.read_bytes() == b""  # created, but nothing unverified written to it
    _assert_cache_consistent(served["cache"])


def test_a_killed_worker_process_fails_the_export_and_the_others_are_stopped(served, forking, monkeypatch):
    write_file = export_module._write_file

    def dying_on_f7(objects, task):
        if task[0].endswith("f7.txt"):
            os.kill(os.getpid(), signal.SIGKILL)
        return write_file(objects, task)

    monkeypatch.setattr(export_module, "_write_file", dying_on_f7)  # the workers are forked with it
    with open_with(served["config"], FQRN) as repository:
        with pytest.raises(OSError) as raised:
            export_module.export(repository, "/", str(served["tmp"] / "out"), processes=3)
    assert raised.value.errno == errno.EIO
    assert "was killed by signal {} before it finished".format(signal.SIGKILL) in str(raised.value)
    assert len(forking) == 3
    _all_reaped(forking)
    _assert_cache_consistent(served["cache"], killed=True)


_SLOW_EXPORT = """
import sys, time
sys.path.insert(0, {tests!r})
from cvmfs_pilot.client import export
from support.client_env import open_with
export.FORK_THRESHOLD, export.TASK_BATCH = 4, 2
export._write_file = lambda objects, task: time.sleep(120)
with open_with({config!r}, {fqrn!r}) as repository:
    export.export(repository, "/", {out!r}, processes=2)
"""


def _children_of(pid):
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/{}/stat".format(entry)) as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry))
        except (OSError, ValueError):
            continue
    return children


def test_the_worker_processes_end_with_an_exporting_process_killed_by_sigkill(served):
    code = _SLOW_EXPORT.format(tests=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               config=str(served["config"]), fqrn=FQRN, out=str(served["tmp"] / "out"))
    exporter = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while len(_children_of(exporter.pid)) < 2 and exporter.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _children_of(exporter.pid)
        assert len(workers) == 2
    finally:
        exporter.kill()
        exporter.wait()
    deadline = time.monotonic() + 10
    while any(os.path.exists("/proc/{}".format(pid)) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if os.path.exists("/proc/{}".format(pid))]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


def _export_in_a_process(config, out, queue):
    try:
        with open_with(config, FQRN) as repository:
            export_module.export(repository, "/", out, processes=2)
        queue.put(None)
    except BaseException as exc:
        queue.put("{}: {}".format(type(exc).__name__, exc))


def test_concurrent_exports_share_the_cache(served, forking):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    outs = [str(served["tmp"] / "out{}".format(i)) for i in range(3)]
    exporters = [context.Process(target=_export_in_a_process, args=(served["config"], out, queue)) for out in outs]
    for exporter in exporters:
        exporter.start()
    try:
        assert [queue.get(timeout=120) for _ in exporters] == [None] * len(exporters)
    finally:
        for exporter in exporters:
            exporter.join(60)
    for out in outs:
        _assert_same_tree(served["src"], out)
    _assert_cache_consistent(served["cache"])


@pytest.fixture
def large_tree(tmp_path, nginx, unprivileged):
    """A tree of more files than FORK_THRESHOLD served by nginx, with a configuration and a cache directory that
    the unprivileged user can use: ``(scratch directory, source tree, configuration directory)``."""
    scratch = unprivileged.scratch(tmp_path)
    src = scratch / "src"
    for i in range(export_module.FORK_THRESHOLD + 44):
        directory = src / "d{}".format(i % 7)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "f{}".format(i)).write_bytes(os.urandom(i % 5) * (i * 37 % 3000))
    config = publish_and_serve(src, FQRN, tmp_path, nginx, scratch / "etc", scratch / "cache")["config"]
    (scratch / "cache").mkdir(exist_ok=True)
    unprivileged.own(str(scratch / "cache"))
    return scratch, src, config


def _fs_get(unprivileged, config, out, *options):
    return unprivileged.run([sys.executable, "-m", "cvmfs_pilot", "fs", "get", FQRN, "/", "--to", str(out),
                             "--config-dir", str(config)] + list(options))


def test_fs_get_of_a_large_tree_forks_worker_processes_as_an_unprivileged_user(large_tree, unprivileged):
    """The command as a pilot runs it: no test settings, more files than FORK_THRESHOLD."""
    scratch, src, config = large_tree
    (scratch / "out").mkdir()
    unprivileged.own(str(scratch / "out"))
    got = _fs_get(unprivileged, config, scratch / "out" / "tree", "-v")
    assert got.returncode == 0, got.stderr
    assert "worker processes" in got.stderr
    assert _assert_same_tree(src, scratch / "out" / "tree") == export_module.FORK_THRESHOLD + 44 + 7
    _assert_cache_consistent(scratch / "cache" / "shared")
    assert [p for p in user_processes(unprivileged.uid) if "cvmfs_pilot" in p[1]] == []


def test_fs_get_says_which_directory_it_cannot_write(large_tree, unprivileged):
    scratch, _, config = large_tree
    locked = scratch / "locked"
    locked.mkdir(0o555)
    got = _fs_get(unprivileged, config, locked / "out")
    assert got.returncode == 1
    assert got.stderr == "cvmfs-pilot fs: error: Permission denied: {}\n".format(locked / "out")
    got = _fs_get(unprivileged, config, "/tmp", "-o", "CVMFS_CACHE_BASE={}".format(scratch / "cache2"))
    assert got.returncode == 1 and "Traceback" not in got.stderr
    assert "cannot create the cache directory {}".format(scratch / "cache2" / "shared") in got.stderr
    assert "set CVMFS_CACHE_BASE to a writable directory" in got.stderr


def test_a_single_file_is_exported_in_this_process(served):
    with open_with(served["config"], FQRN) as repository:
        report = export_module.export(repository, "/big.bin", str(served["tmp"] / "one"))
    assert report.files == 1 and report.bytes == 100_000
    assert (served["tmp"] / "one" / "big.bin").read_bytes() == (served["src"] / "big.bin").read_bytes()


def test_the_number_of_processes_follows_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert export_module._process_count(8) == 4
    assert export_module._process_count(3) == 3
    monkeypatch.setattr(export_module, "PROCESSES", 1)
    assert export_module._process_count(8) == 1


# -- the kernel copy --------------------------------------------------------------------------------------------------

def _copied(tmp_path, data, size):
    source, target = tmp_path / "source", tmp_path / "target"
    source.write_bytes(data)
    with open(str(source), "rb") as s, open(str(target), "wb") as t:
        complete = repository_module.copy_file(s.fileno(), t.fileno(), size)
    return complete, target.read_bytes()


def test_copy_file_copies_and_reports_a_short_source(tmp_path):
    data = os.urandom(300_000)
    assert _copied(tmp_path, data, len(data)) == (True, data)
    assert _copied(tmp_path, data[:1000], 2000) == (False, data[:1000])


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EINVAL])
def test_copy_file_falls_back_to_sendfile(tmp_path, monkeypatch, code):
    calls = []

    def refusing(*args):
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(repository_module, "_copy_file_range", refusing)
    data = os.urandom(100_000)
    assert _copied(tmp_path, data, len(data)) == (True, data)
    assert _copied(tmp_path, data, len(data)) == (True, data)
    # EINVAL may depend on the files; the others mean it cannot work here: it is not tried again
    assert len(calls) == (2 if code == errno.EINVAL else 1)


def test_copy_file_falls_back_when_the_kernel_copies_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(repository_module, "_copy_file_range", lambda *args: 0)
    data = os.urandom(10_000)
    assert _copied(tmp_path, data, len(data)) == (True, data)
