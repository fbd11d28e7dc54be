"""The local cache: round trips, atomicity, corruption, several processes, quota and pins, breadcrumbs, crashes."""

import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import zlib

import pytest

from cvmfs_pilot.client import cache as cache_module
from cvmfs_pilot.client import lock_file
from cvmfs_pilot.client.cache import CATALOG, Cache, CacheError, cache_directory
from cvmfs_pilot.cvmfs.hashing import SHAKE128, ContentHash


def make_object(name, size=1000, algorithm=None):
    """``(content hash, decompressed content)`` of a made-up object; the hash covers the compressed bytes."""
    content = (hashlib.sha256(name.encode()).digest() * (size // 32 + 1))[:size]
    stored = zlib.compress(content)
    return (ContentHash.of(stored) if algorithm is None else ContentHash.of(stored, algorithm)), content


def writing(content):
    return lambda f: f.write(content)


def read(cache, content_hash):
    f = cache.open(content_hash)
    if f is None:
        return None
    with f:
        return f.read()


def cached_keys(directory):
    """The object files under the fan-out directories, as hash text."""
    return {fan + name for fan in ("{:02x}".format(i) for i in range(256))
            for name in os.listdir(os.path.join(str(directory), fan))}


def recorded_keys(directory):
    with sqlite3.connect(os.path.join(str(directory), "cachedb")) as db:
        return {row[0] for row in db.execute("SELECT hash FROM objects")}


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


@pytest.fixture
def cache(tmp_path):
    with Cache(tmp_path / "shared") as cache:
        yield cache


# -- basics -------------------------------------------------------------------------------------------------------

def test_store_then_open_returns_the_content(cache):
    h, content = make_object("a", 5000)
    empty, _ = make_object("empty", 0)
    rmd, rmd_content = make_object("rmd", 10, SHAKE128)
    path = cache.store(h, writing(content))
    assert path == os.path.join(cache.directory, h.hex()[:2], h.hex()[2:])
    assert cache.store(empty, writing(b"")) == cache.path_of(empty)
    cache.store(rmd, writing(rmd_content), kind=CATALOG)
    assert cache.path_of(rmd).endswith("-shake128")
    assert read(cache, h) == content
    assert read(cache, empty) == b""
    assert read(cache, rmd) == rmd_content
    assert cache.usage() == (5010, 3, 0)
    assert read(cache, make_object("absent")[0]) is None


def test_storing_an_object_again_keeps_one_copy(cache):
    h, content = make_object("twice")
    cache.store(h, writing(content))
    cache.store(h, writing(content))
    assert read(cache, h) == content
    assert cache.usage() == (1000, 1, 0)
    assert cached_keys(cache.directory) == {h.hex()}


def test_a_failing_fill_leaves_nothing(cache):
    h, content = make_object("broken")

    def fill(f):
        f.write(content[:500])
        raise IOError("hash mismatch")

    with pytest.raises(IOError, match="hash mismatch"):
        cache.store(h, fill)
    assert read(cache, h) is None
    assert not os.path.exists(cache.path_of(h))
    assert os.listdir(os.path.join(cache.directory, "txn")) == []
    assert cache.usage() == (0, 0, 0)


def test_layout_and_permissions_are_private(tmp_path):
    directory = tmp_path / "base" / "shared"
    with Cache(directory) as cache:
        h, content = make_object("private")
        cache.store(h, writing(content))
        cache.write_breadcrumb("atlas.cern.ch", h, 1700000000, 7)
        for name in ["00", "7f", "ff", "txn", "quarantaine"]:
            assert mode(directory / name) == 0o700, name
        assert mode(directory) == 0o700
        assert mode(cache.path_of(h)) == 0o600
        for name in ("cachedb", "cachedb-wal", "cachedb-shm", "fetchlocks", "cvmfschecksum.atlas.cern.ch"):
            assert mode(directory / name) == 0o600, name
        others = {"txn", "quarantaine", "cachedb", "cachedb-wal", "cachedb-shm", "fetchlocks",
                  "cvmfschecksum.atlas.cern.ch"}
        assert set(os.listdir(str(directory))) == {"{:02x}".format(i) for i in range(256)} | others


def test_cache_directory_follows_cvmfs_shared_cache():
    assert cache_directory("/var/lib/cvmfs", "atlas.cern.ch") == "/var/lib/cvmfs/shared"
    assert cache_directory("/var/lib/cvmfs", "atlas.cern.ch", shared=False) == "/var/lib/cvmfs/atlas.cern.ch"


@pytest.mark.parametrize("limit", [0, -1])
def test_a_quota_must_be_positive_or_none(tmp_path, limit):
    with pytest.raises(ValueError, match="None for no limit"):
        Cache(tmp_path, quota_limit_bytes=limit)


def test_a_foreign_cache_database_is_refused(tmp_path):
    with sqlite3.connect(str(tmp_path / "cachedb")) as db:
        db.execute("CREATE TABLE cache_catalog (sha1 TEXT PRIMARY KEY, size INTEGER, acseq INTEGER, path TEXT, "
                   "type INTEGER, pinned INTEGER)")
    with pytest.raises(CacheError, match="not a cvmfs-pilot cache database"):
        Cache(tmp_path)


def test_a_cache_cannot_be_used_across_fork(cache):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_use_inherited_cache, args=(cache, queue))
    child.start()
    try:
        assert "cannot be used after fork()" in queue.get(timeout=30)
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()


def _use_inherited_cache(cache, queue):
    try:
        cache.usage()
        queue.put("no error")
    except CacheError as exc:
        queue.put(str(exc))


# -- corruption -----------------------------------------------------------------------------------------------------

def test_a_truncated_object_is_quarantined_and_fetched_again(cache):
    h, content = make_object("truncated")
    path = cache.store(h, writing(content))
    with open(path, "r+b") as f:
        f.truncate(100)
    assert read(cache, h) is None  # the size is checked on every open, even of verified objects
    assert not os.path.exists(path)
    assert [name.split(".")[0] for name in os.listdir(os.path.join(cache.directory, "quarantaine"))] == [h.hex()]
    assert cache.usage() == (0, 0, 0)
    cache.store(h, writing(content))
    assert read(cache, h) == content


def test_a_flipped_byte_is_detected_at_the_first_open(tmp_path, caplog):
    h, content = make_object("flipped")
    with Cache(tmp_path) as writer:
        path = writer.store(h, writing(content))
    with open(path, "r+b") as f:
        f.seek(500)
        f.write(bytes([content[500] ^ 0x01]))
    with Cache(tmp_path) as cache:
        with caplog.at_level(logging.WARNING):
            assert read(cache, h) is None
        assert "is corrupted (its crc32 is" in caplog.text
        assert not os.path.exists(path)
        assert len(os.listdir(str(tmp_path / "quarantaine"))) == 1
        assert cache.usage() == (0, 0, 0)


def test_verified_objects_are_not_read_twice(tmp_path):
    h, content = make_object("verified-once")
    with Cache(tmp_path) as writer:
        path = writer.store(h, writing(content))
    with Cache(tmp_path) as cache:
        assert read(cache, h) == content
        with open(path, "r+b") as f:  # a same-size change after the first open goes unnoticed by this Cache
            f.write(b"X")
        assert read(cache, h) == b"X" + content[1:]
    with Cache(tmp_path, verify_on_first_open=False) as unchecked:
        assert read(unchecked, h) == b"X" + content[1:]
    with Cache(tmp_path) as cache:
        assert read(cache, h) is None


def test_a_file_without_a_database_row_is_not_trusted(cache):
    h, content = make_object("orphan")
    with open(cache.path_of(h), "wb") as f:  # as if a process died between the rename and the commit
        f.write(b"left over")
    assert read(cache, h) is None
    assert os.path.exists(cache.path_of(h))
    cache.store(h, writing(content))
    assert read(cache, h) == content


def test_only_the_newest_quarantined_objects_are_kept(cache):
    for i in range(20):
        h, content = make_object("bad-{}".format(i), 10)
        with open(cache.store(h, writing(content)), "ab") as f:
            f.write(b"grown")
        assert read(cache, h) is None
    assert len(os.listdir(os.path.join(cache.directory, "quarantaine"))) == 16


# -- several processes and threads ------------------------------------------------------------------------------

def _fetch(cache, h, content):
    """What a client does: open, else fetch under the fetch lock; ``(content read or None, stored?)``."""
    data = read(cache, h)
    if data is not None:
        return data, False
    with cache.fetch_lock(h):
        data = read(cache, h)
        if data is not None:
            return data, False
        cache.store(h, writing(content))
        return read(cache, h), True


def _object_of(worker, i):
    """Even objects are shared by all workers, odd ones belong to one worker."""
    name = "shared-{}".format(i) if i % 2 == 0 else "own-{}-{}".format(worker, i)
    return name, make_object(name, (i * 37) % 3000)


def _worker(directory, worker, count, quota, queue):
    stored, missing, wrong = [], [], []
    try:
        with Cache(directory, quota) as cache:
            for round_ in range(2):  # the second round reads what the other workers stored
                for i in range(count):
                    name, (h, content) = _object_of(worker, i)
                    data, was_stored = _fetch(cache, h, content)
                    if was_stored:
                        stored.append(name)
                    if data is None:
                        missing.append(name)
                    elif data != content:
                        wrong.append(name)
        queue.put((worker, stored, missing, wrong, None))
    except BaseException as exc:
        queue.put((worker, stored, missing, wrong, "{}: {}".format(type(exc).__name__, exc)))


def _run_workers(directory, workers, count, quota):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(str(directory), w, count, quota, queue))
                 for w in range(workers)]
    try:
        for process in processes:
            process.start()
        results = [queue.get(timeout=300) for _ in processes]
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    return sorted(results)


def test_processes_share_the_cache_and_fetch_each_object_once(tmp_path):
    workers, count = 4, 200
    results = _run_workers(tmp_path, workers, count, quota=None)
    assert [error for *_, error in results] == [None] * workers
    assert [(missing, wrong) for _, _, missing, wrong, _ in results] == [([], [])] * workers
    stored = [name for _, names, *_ in results for name in names]
    assert sorted(n for n in stored if n.startswith("shared")) == sorted(
        "shared-{}".format(i) for i in range(0, count, 2))  # the fetch lock: each shared object stored once
    assert len(stored) == len(set(stored))
    objects = {h: content for w in range(workers) for _, (h, content) in (_object_of(w, i) for i in range(count))}
    with Cache(tmp_path) as cache:
        assert cache.usage() == (sum(len(c) for c in objects.values()), len(objects), 0)
        assert all(read(cache, h) == content for h, content in objects.items())
    assert cached_keys(tmp_path) == recorded_keys(tmp_path) == {h.hex() for h in objects}
    assert os.listdir(str(tmp_path / "txn")) == []


def test_processes_share_a_cache_under_quota_pressure(tmp_path):
    quota = 100000  # a fifth of what the workers store: cleanups run all the time, in all of them
    results = _run_workers(tmp_path, 4, 200, quota)
    assert [error for *_, error in results] == [None] * 4
    assert [wrong for _, _, _, wrong, _ in results] == [[]] * 4
    assert cached_keys(tmp_path) == recorded_keys(tmp_path)  # files and rows changed together
    with Cache(tmp_path, quota) as cache:
        total_bytes, objects, _ = cache.usage()
        on_disk = sum(os.path.getsize(cache.path_of(ContentHash.parse(k))) for k in cached_keys(tmp_path))
        assert (total_bytes, objects) == (on_disk, len(cached_keys(tmp_path)))
        for i in range(quota // 1000 + 1):  # store until this process's cleanup runs: it removes enough
            h, content = make_object("more-{}".format(i))
            cache.store(h, writing(content))
            if cache.usage()[0] < total_bytes:
                break
            total_bytes = cache.usage()[0]
        assert cache.usage()[0] <= quota // 2
    assert [name for name in os.listdir(str(tmp_path / "txn"))] == []


def test_threads_share_a_cache(cache):
    errors = []

    def work(thread):
        try:
            for i in range(50):
                _, (h, content) = _object_of(thread, i)
                data, _ = _fetch(cache, h, content)
                assert data == content
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert cache.usage()[1] == 25 + 4 * 25


def test_the_fetch_lock_excludes_and_leaves_no_file(cache):
    h, _ = make_object("locked")
    entered = threading.Event()
    order = []

    def second():
        entered.wait(10)
        with cache.fetch_lock(h):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with cache.fetch_lock(h):
        entered.set()
        time.sleep(0.3)
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    assert os.listdir(os.path.join(cache.directory, "txn")) == []


def _cross_locker(directory, mine, theirs, i_have, they_have, queue):
    """Hold ``mine`` in one thread while another thread of this process waits for ``theirs``, held by another
    process whose second thread waits for ``mine``: the kernel sees a deadlock between the two processes."""
    errors = []
    try:
        with Cache(directory) as cache:
            def wait_for_theirs():
                try:
                    they_have.wait(10)
                    time.sleep(0.2)  # the other process's waiter is blocked by now (for one of the two)
                    with cache.fetch_lock(theirs):
                        pass
                except BaseException as exc:
                    errors.append("{}: {}".format(type(exc).__name__, exc))

            with cache.fetch_lock(mine):
                i_have.set()
                waiter = threading.Thread(target=wait_for_theirs)
                waiter.start()
                time.sleep(1.0)
            waiter.join(30)
    except BaseException as exc:
        errors.append("{}: {}".format(type(exc).__name__, exc))
    queue.put(errors)


def test_fetch_locks_held_by_threads_of_two_processes_are_no_deadlock(tmp_path):
    x, _ = make_object("x")
    y, _ = make_object("y")
    Cache(tmp_path).close()
    context = multiprocessing.get_context("fork")
    queue, a_has_x, b_has_y = context.Queue(), context.Event(), context.Event()
    processes = [context.Process(target=_cross_locker, args=(str(tmp_path), x, y, a_has_x, b_has_y, queue)),
                 context.Process(target=_cross_locker, args=(str(tmp_path), y, x, b_has_y, a_has_x, queue))]
    for process in processes:
        process.start()
    try:
        assert [queue.get(timeout=60), queue.get(timeout=60)] == [[], []]  # no EDEADLK ("Resource deadlock")
    finally:
        for process in processes:
            process.join(30)


# -- deferred stores --------------------------------------------------------------------------------------------------

def test_deferred_stores_are_usable_at_once_and_recorded_in_batches(tmp_path):
    objects = [make_object("deferred-{}".format(i)) for i in range(5)]
    with Cache(tmp_path) as cache, Cache(tmp_path) as other:
        cache.defer_stores(3)
        for h, content in objects[:2]:
            with cache.store_and_open(h, writing(content)) as f:
                assert f.read() == content
        for h, content in objects[:2]:
            assert read(cache, h) == content  # this Cache sees them ...
            assert read(other, h) is None and not os.path.exists(cache.path_of(h))  # ... nobody else yet
        assert cache.usage() == (0, 0, 0) and len(os.listdir(str(tmp_path / "txn"))) == 2
        cache.store_and_open(*objects[2][:1], writing(objects[2][1])).close()  # the third: one transaction
        assert other.usage() == (3000, 3, 0)
        assert all(read(other, h) == content for h, content in objects[:3])
        assert os.listdir(str(tmp_path / "txn")) == []
        assert cache.store(objects[3][0], writing(objects[3][1])) == cache.path_of(objects[3][0])
        assert read(other, objects[3][0]) == objects[3][1]  # store() returns a path: it is there
        cache.store_and_open(*objects[4][:1], writing(objects[4][1])).close()
        assert read(other, objects[4][0]) is None
    with Cache(tmp_path) as cache:  # close() recorded the last one
        assert all(read(cache, h) == content for h, content in objects)
        assert cache.usage() == (5000, 5, 0)
    assert cached_keys(tmp_path) == recorded_keys(tmp_path)


def test_deferred_stores_wait_at_most_the_flush_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "STORE_FLUSH_INTERVAL", 0.0)
    h, content = make_object("soon")
    with Cache(tmp_path) as cache, Cache(tmp_path) as other:
        cache.defer_stores(100)
        cache.store_and_open(h, writing(content)).close()
        assert read(other, h) == content


def test_a_deferred_store_of_an_object_another_process_stored_meanwhile(tmp_path):
    h, content = make_object("twice")
    with Cache(tmp_path) as cache:
        cache.defer_stores(10)
        cache.store_and_open(h, writing(content)).close()
        code = "from cvmfs_pilot.client.cache import Cache; from cvmfs_pilot.cvmfs.hashing import ContentHash; " \
               "Cache({!r}).store(ContentHash.parse({!r}), lambda f: f.write({!r}))".format(str(tmp_path), h.hex(),
                                                                                           content)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert cache.usage() == (1000, 1, 0)
        cache.flush_stores()
        assert cache.usage() == (1000, 1, 0)
        assert read(cache, h) == content
    assert cached_keys(tmp_path) == recorded_keys(tmp_path) == {h.hex()}
    assert os.listdir(str(tmp_path / "txn")) == []


def test_a_deferred_store_removed_as_stale_is_not_recorded(tmp_path):
    (h1, c1), (h2, c2) = make_object("stale"), make_object("fresh")
    with Cache(tmp_path) as cache:
        cache.defer_stores(10)
        cache.store_and_open(h1, writing(c1)).close()
        [temp] = os.listdir(str(tmp_path / "txn"))
        os.unlink(str(tmp_path / "txn" / temp))  # what another process's Cache() does after an hour
        cache.store_and_open(h2, writing(c2)).close()
        cache.flush_stores()
        assert read(cache, h2) == c2 and read(cache, h1) is None
    assert recorded_keys(tmp_path) == {h2.hex()}


def test_a_failing_fill_leaves_nothing_when_deferring(cache):
    h, content = make_object("fails")

    def fill(f):
        f.write(content[:10])
        raise ValueError("bad data")

    cache.defer_stores()
    with pytest.raises(ValueError):
        cache.store_and_open(h, fill)
    cache.flush_stores()
    assert read(cache, h) is None and cache.usage() == (0, 0, 0)
    assert os.listdir(os.path.join(cache.directory, "txn")) == []


def _locks_held(pid, path):
    """The POSIX locks that process ``pid`` holds on the file ``path`` (from /proc/locks)."""
    st = os.stat(path)
    inode = "{:02x}:{:02x}:{}".format(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    with open("/proc/locks") as f:
        return [line for line in f if line.split()[4:6] == [str(pid), inode]]


@pytest.mark.parametrize("closed", [True, False])
def test_a_cache_forked_within_closed_for_fork_really_holds_its_database_lock(tmp_path, closed):
    """A WAL connection holds a shared lock on the database while open. Forked while the parent's connection is
    open, the child's own connection believes the lock is held already and takes none (so another process could
    remove the WAL under it); forked within closed_for_fork(), it takes it."""
    database = str(tmp_path / "cachedb")
    with Cache(tmp_path) as cache:
        assert _locks_held(os.getpid(), database)
        read_end, write_end = os.pipe()
        with (cache.closed_for_fork() if closed else contextlib.nullcontext(True)) as safe:
            assert safe
            pid = os.fork()
            if pid == 0:
                try:
                    child = cache.forked()
                    child.usage()
                    os.write(write_end, b"locked" if _locks_held(os.getpid(), database) else b"unlocked")
                finally:
                    os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as answer:
            assert answer.read() == (b"locked" if closed else b"unlocked")
        os.waitpid(pid, 0)
        assert _locks_held(os.getpid(), database)  # the parent's connection is open again
        cache.store(*make_object("after")[:1], writing(make_object("after")[1]))
        assert cache.usage()[1] == 1


def test_closed_for_fork_is_not_safe_while_another_connection_of_this_process_is_open(tmp_path):
    with Cache(tmp_path) as cache:
        with contextlib.closing(sqlite3.connect(str(tmp_path / "cachedb"))) as other:
            other.execute("SELECT COUNT(*) FROM objects").fetchall()
            with cache.closed_for_fork() as safe:
                assert not safe
        with cache.closed_for_fork() as safe:
            assert safe
        assert cache.usage() == (0, 0, 0)


# -- quota and pins -------------------------------------------------------------------------------------------------

def test_exceeding_the_quota_removes_least_recently_used_unpinned_objects(tmp_path):
    objects = [make_object("lru-{}".format(i)) for i in range(11)]  # 1000 bytes each
    with Cache(tmp_path, quota_limit_bytes=10000) as writer:
        for i, (h, content) in enumerate(objects[:10]):
            writer.store(h, writing(content), kind=CATALOG, pin=(i == 0))
        assert writer.usage() == (10000, 10, 1000)  # at the quota, not above: nothing removed
        with Cache(tmp_path) as reader:  # another process uses objects 1 and 2; close() records it
            assert read(reader, objects[1][0]) == objects[1][1]
            assert read(reader, objects[2][0]) == objects[2][1]
        writer.store(objects[10][0], writing(objects[10][1]))
        survivors = [i for i, (h, _) in enumerate(objects) if read(writer, h) is not None]
        assert survivors == [0, 1, 2, 9, 10]
        assert writer.usage() == (5000, 5, 1000)
        writer.unpin(objects[0][0])
        assert writer.usage()[2] == 0
    assert cached_keys(tmp_path) == recorded_keys(tmp_path) == {objects[i][0].hex() for i in survivors}


def test_a_quota_too_small_for_the_pinned_objects_keeps_them_and_warns_once(tmp_path, caplog):
    objects = [make_object("all-pinned-{}".format(i)) for i in range(4)]
    with Cache(tmp_path, quota_limit_bytes=2500) as cache:
        with caplog.at_level(logging.WARNING):
            for h, content in objects:
                cache.store(h, writing(content), pin=True)
        assert cache.usage() == (4000, 4, 4000)
        assert caplog.text.count("more than its quota of 2500 bytes") == 1


PINNER = """
import sys
from cvmfs_pilot.client.cache import Cache
from cvmfs_pilot.cvmfs.hashing import ContentHash
cache = Cache(sys.argv[1])
cache.pin(ContentHash.parse(sys.argv[2]))
print("pinned", flush=True)
sys.stdin.read()
"""


def _start_pinner(directory, content_hash):
    process = subprocess.Popen([sys.executable, "-c", PINNER, str(directory), content_hash.hex()],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"pinned\n"
    return process


def test_pins_of_a_killed_process_are_ignored(tmp_path):
    objects = [make_object("pin-{}".format(i)) for i in range(11)]
    with Cache(tmp_path, quota_limit_bytes=10000) as cache:
        for h, content in objects[:10]:
            cache.store(h, writing(content))
        killed = _start_pinner(tmp_path, objects[0][0])
        running = _start_pinner(tmp_path, objects[1][0])
        try:
            assert cache.usage()[2] == 2000
            killed.send_signal(signal.SIGKILL)
            killed.wait(30)
            assert cache.usage()[2] == 1000
            cache.store(objects[10][0], writing(objects[10][1]))
            survivors = [i for i, (h, _) in enumerate(objects) if read(cache, h) is not None]
            assert survivors == [1, 7, 8, 9, 10]
        finally:
            for process in (killed, running):
                process.stdin.close()
                process.stdout.close()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        assert cache.usage()[2] == 0


def test_a_pin_recorded_for_a_recycled_pid_does_not_count(cache):
    h, content = make_object("recycled")
    cache.store(h, writing(content), pin=True)
    assert cache.usage() == (1000, 1, 1000)
    with sqlite3.connect(os.path.join(cache.directory, "cachedb")) as db:  # same pid, another start time
        db.execute("UPDATE pins SET start_time = start_time - 1")
    assert cache.usage() == (1000, 1, 0)


# -- breadcrumbs ----------------------------------------------------------------------------------------------------

ROOT = ContentHash.parse("e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78")


def test_breadcrumb_round_trip(cache):
    assert cache.read_breadcrumb("atlas.cern.ch") is None
    cache.write_breadcrumb("atlas.cern.ch", ROOT, 1700000000, 42)
    path = os.path.join(cache.directory, "cvmfschecksum.atlas.cern.ch")
    with open(path, "rb") as f:
        assert f.read() == b"e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78T1700000000R42"
    assert cache.read_breadcrumb("atlas.cern.ch") == (ROOT, 1700000000, 42)
    other = make_object("root", algorithm=SHAKE128)[0]
    cache.write_breadcrumb("atlas.cern.ch", other, 1700000100, 43)
    assert cache.read_breadcrumb("atlas.cern.ch") == (other, 1700000100, 43)
    assert cache.read_breadcrumb("cms.cern.ch") is None
    assert os.listdir(os.path.join(cache.directory, "txn")) == []


def test_a_breadcrumb_without_revision_reads_as_revision_0(cache):
    with open(os.path.join(cache.directory, "cvmfschecksum.atlas.cern.ch"), "w") as f:
        f.write(ROOT.hex() + "T1700000000\n")
    assert cache.read_breadcrumb("atlas.cern.ch") == (ROOT, 1700000000, 0)


@pytest.mark.parametrize("garbage", [
    b"", b"garbage", b"\xff\xfe\x00", ROOT.hex().encode(), (ROOT.hex() + "Tsoon").encode(),
    (ROOT.hex() + "T1R").encode(), (ROOT.hex().upper() + "T1R1").encode(), b"T1R1",
    (ROOT.hex() + "-md5T1R1").encode(), (ROOT.hex() + "T1R1").encode() * 10,
])
def test_a_garbage_breadcrumb_is_ignored_with_a_warning(cache, caplog, garbage):
    with open(os.path.join(cache.directory, "cvmfschecksum.atlas.cern.ch"), "wb") as f:
        f.write(garbage)
    with caplog.at_level(logging.WARNING):
        assert cache.read_breadcrumb("atlas.cern.ch") is None
    assert "ignoring the breadcrumb" in caplog.text


@pytest.mark.parametrize("fqrn", ["", "../x", "a/b", ".hidden"])
def test_a_breadcrumb_needs_a_repository_name(cache, fqrn):
    with pytest.raises(ValueError, match="not a repository name"):
        cache.write_breadcrumb(fqrn, ROOT, 1, 1)


# -- crashes ----------------------------------------------------------------------------------------------------------

CRASHER = """
import sys, time
from cvmfs_pilot.client.cache import Cache
from cvmfs_pilot.cvmfs.hashing import ContentHash

def fill(f):
    f.write(b"the first half")
    print("filling", flush=True)
    time.sleep(60)

Cache(sys.argv[1]).store(ContentHash.parse(sys.argv[2]), fill)
"""


def test_a_killed_store_leaves_only_a_temporary_file_removed_later(tmp_path):
    h, content = make_object("crash")
    process = subprocess.Popen([sys.executable, "-c", CRASHER, str(tmp_path), h.hex()], stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"filling\n"
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    txn = tmp_path / "txn"
    [temp] = os.listdir(str(txn))
    with Cache(tmp_path) as cache:  # a fresh temporary file may belong to a running store: kept
        assert read(cache, h) is None
        assert cache.usage() == (0, 0, 0)
        assert os.listdir(str(txn)) == [temp]
        cache.store(h, writing(content))
        assert read(cache, h) == content
    hour_ago = time.time() - 3700
    os.utime(str(txn / temp), (hour_ago, hour_ago))
    Cache(tmp_path).close()
    assert os.listdir(str(txn)) == []


def test_stale_lock_files_are_removed_unless_held(tmp_path):
    Cache(tmp_path).close()
    txn = str(tmp_path / "txn")
    stale, held = os.path.join(txn, "a.lock"), os.path.join(txn, "b.lock")
    open(stale, "w").close()
    fd = lock_file.acquire(held)
    try:
        hour_ago = time.time() - 3700
        for path in (stale, held):
            os.utime(path, (hour_ago, hour_ago))
        Cache(tmp_path).close()
        assert os.listdir(txn) == ["b.lock"]
    finally:
        lock_file.release(held, fd)
    assert os.listdir(txn) == []
