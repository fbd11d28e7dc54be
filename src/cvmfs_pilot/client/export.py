"""Exporting a subtree of a repository to a local directory (``fs get``): the fallback for nodes without FUSE.

Directories, regular files (with their permission bits and modification times), symlinks (targets as ``readlink``
shows them) and FIFOs are recreated; device files and sockets are skipped with a warning. Nothing existing is
overwritten, and no name from a catalog can lead outside the target.

This process walks the catalogs and creates the directories; the files are written by ``workers`` threads. A large
export spreads them over worker processes forked from this one (``processes``, by default two per usable CPU, at
most ``workers``; only while this process runs no other thread and has no other connection to the cache
database, which a child could not use safely), each with a share of the threads, its own connections and its
own handle on the shared cache, whose stores it records in batches: the interpreter runs Python code in one
thread at a time, and a cold export is mostly Python work (HTTP, decompression and hashing glue, cache
bookkeeping) between system calls. The files are dealt to the processes by content hash, so the files that share
an object are written by one process, which fetches that object once. Every object is verified against its
content hash before its bytes reach the target.
"""

import concurrent.futures
import ctypes
import errno
import logging
import os
import pickle
import select
import signal
import stat as statmod
import struct
import threading
import time

from cvmfs_pilot.cvmfs import paths

from .cache import CacheError
from .objects import ObjectFetcher
from .repository import RepositoryError, copy_objects, error_text

log = logging.getLogger(__name__)

WORKERS = 8  # files written at once
PROCESSES = None  # worker processes; None: two per usable CPU, at most WORKERS
FORK_THRESHOLD = 256  # files: a smaller export is written by threads of this process alone
TASK_BATCH = 32  # files sent to a worker process per message
STOP_GRACE = 15.0  # seconds that workers get to finish the files they are writing when the export fails
STOP_POLL = 0.2  # seconds between a worker's looks at whether it must stop

PR_SET_PDEATHSIG = 1
_LENGTH = struct.Struct(">I")


class ExportReport(object):
    def __init__(self):
        self.directories = 0
        self.files = 0
        self.bytes = 0
        self.symlinks = 0
        self.skipped = 0


def _safe_name(name, directory):
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RepositoryError(errno.EIO, "directory {} of the repository lists an unsafe name {!r}; refusing "
                                         "to export it".format(directory or "/", name))
    return name


def _file_task(repository, entry, loaded, target, st):
    """What a worker needs to write one file: ``(target, repository path, pieces, compression, mode, mtime_ns)``."""
    return (target, entry.path, repository.file_pieces(entry, loaded), entry.compression,
            statmod.S_IMODE(st.st_mode) & 0o777, st.st_mtime_ns)


def _write_file(objects, task):
    """Create the file of ``task`` (see _file_task) and write its verified content; returns its size."""
    target, path, pieces, compression, mode, mtime_ns = task
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        copy_objects(objects, pieces, compression, fd, path)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)
    return sum(size for _, _, size in pieces)


def export(repository, path, destination, workers=None, processes=None):
    """Copy the subtree at repository ``path`` into directory ``destination`` (created if missing), with
    ``workers`` files written at once (default WORKERS) by ``processes`` processes (default: _process_count)."""
    workers = max(1, WORKERS if workers is None else workers)
    root = paths.normalize(path)
    report = ExportReport()
    st = repository.stat(root)
    os.makedirs(destination, exist_ok=True)
    if not statmod.S_ISDIR(st.st_mode):
        name = _safe_name(root.rsplit("/", 1)[-1], paths.parent(root))
        entry, loaded = repository.entry(root)
        report.bytes += _write_file(repository.objects,
                                    _file_task(repository, entry, loaded, os.path.join(destination, name), st))
        report.files += 1
        return report
    directories = []  # (target, st) to stamp with mtimes after their contents are written
    writers = _Writers(repository, workers, _process_count(workers) if processes is None else processes)
    try:
        stack = [(root, destination, st)]
        while stack:
            directory, target, dir_st = stack.pop()
            if directory != root:
                os.mkdir(target, 0o700)
            directories.append((target, dir_st))
            report.directories += 1
            for entry, loaded in repository.listdir_entries(directory):
                name = _safe_name(entry.name, directory)
                child_path = paths.join(directory, name)
                child_target = os.path.join(target, name)
                child = repository.stat_entry(entry, loaded)
                mode = child.st_mode
                if statmod.S_ISDIR(mode):
                    stack.append((child_path, child_target, child))
                elif statmod.S_ISREG(mode):
                    writers.submit(_file_task(repository, entry, loaded, child_target, child))
                elif statmod.S_ISLNK(mode):
                    os.symlink(repository.readlink(child_path), child_target)
                    report.symlinks += 1
                elif statmod.S_ISFIFO(mode):
                    os.mkfifo(child_target, statmod.S_IMODE(mode) & 0o777)
                else:
                    log.warning("%s: device files and sockets cannot be exported; skipped", child_path)
                    report.skipped += 1
        report.files, report.bytes = writers.finish()
    finally:
        writers.abort()
    for target, dir_st in reversed(directories):
        os.chmod(target, statmod.S_IMODE(dir_st.st_mode) & 0o777 | 0o700)
        os.utime(target, ns=(dir_st.st_mtime_ns, dir_st.st_mtime_ns))
    return report


def _process_count(workers):
    """PROCESSES, or two per CPU this process may run on (at most ``workers``)."""
    if PROCESSES is not None:
        return min(workers, PROCESSES)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(workers, 2 * cpus)


class _Writers(object):
    """Writes the files submitted: with threads of this process until FORK_THRESHOLD files are waiting, then by
    worker processes (if ``processes`` > 1 and this process runs no other thread, as fork() requires)."""

    def __init__(self, repository, workers, processes):
        self._repository = repository
        self._workers = workers
        self._processes = processes
        self._waiting = []  # tasks not yet handed out
        self._pool = None  # threads of this process ...
        self._futures = []
        self._children = []  # ... or worker processes

    def submit(self, task):
        if self._pool is not None:
            self._submit_to_pool(task)
            return
        self._waiting.append(task)
        if self._children:
            self._send(self._waiting)
        elif len(self._waiting) >= FORK_THRESHOLD:
            if self._processes > 1 and threading.active_count() == 1:
                self._start_children()
            if not self._children:
                self._start_pool()

    def finish(self):
        """Wait for every file; ``(files, bytes)`` written. Raises the first failure."""
        if not self._children and self._pool is None:
            self._start_pool()
        if self._pool is not None:
            files = size = 0
            try:
                for future in self._futures:
                    size += future.result()
                    files += 1
            except BaseException:
                for future in self._futures:
                    future.cancel()  # those not started yet
                raise
            finally:
                self._stop_pool()
            return files, size
        self._send(self._waiting, everything=True)
        for child in self._children:
            child.close_tasks()
        files = size = 0
        while self._children:  # in the order they finish: the first failure stops the others (abort())
            ready, _, _ = select.select([child.results_fd for child in self._children], [], [])
            child = next(child for child in self._children if child.results_fd == ready[0])
            self._children.remove(child)
            answer = child.result()
            if answer[0] != "ok":
                raise _failure(answer)
            files += answer[1]
            size += answer[2]
        return files, size

    def abort(self):
        """Stop after a failure (of this process or a worker): cancel what is waiting, stop the workers."""
        if self._pool is not None:
            for future in self._futures:
                future.cancel()
            self._stop_pool()
        for child in self._children:
            child.stop()
        deadline = time.monotonic() + STOP_GRACE
        for child in self._children:
            child.reap(deadline)
        self._children = []

    # -- threads of this process ----------------------------------------------------------------------------------

    def _start_pool(self):
        self._repository.objects.cache.defer_stores()
        self._pool = concurrent.futures.ThreadPoolExecutor(self._workers)
        waiting, self._waiting = self._waiting, []
        for task in waiting:
            self._submit_to_pool(task)

    def _stop_pool(self):
        try:
            self._pool.shutdown(wait=True)
        finally:
            self._pool = None
            self._repository.objects.cache.defer_stores(0)  # records what is pending

    def _submit_to_pool(self, task):
        self._futures.append(self._pool.submit(_write_file, self._repository.objects, task))

    # -- worker processes -----------------------------------------------------------------------------------------

    def _start_children(self):
        threads = -(-self._workers // self._processes)
        with self._repository.objects.cache.closed_for_fork() as safe:
            if not safe:
                log.info("another connection of this process has the cache database open; writing the files "
                         "with threads of this process instead of worker processes")
                return
            for _ in range(self._processes):
                try:
                    self._children.append(_Child.start(self._repository, threads, self._children))
                except OSError as exc:  # fork() refused (process limit, memory): make do with fewer
                    log.warning("cannot start an export worker process (%s); using %d", exc, len(self._children))
                    break
        if len(self._children) == 1:  # one worker process gains nothing over threads of this one
            self._children.pop().result()
        if self._children:
            log.info("writing the files with %d worker processes of %d threads", len(self._children), threads)

    def _send(self, tasks, everything=False):
        """Deal ``tasks`` to the workers by the content hash of their first object; send them once there are
        TASK_BATCH per worker (or at once with ``everything``). Sent tasks are taken off ``tasks``."""
        count = len(self._children)
        if not everything and len(tasks) < TASK_BATCH * count:
            return
        shares = [[] for _ in range(count)]
        for task in tasks:
            pieces = task[2]
            shares[int.from_bytes(pieces[0][0].digest[:4], "big") % count if pieces else 0].append(task)
        del tasks[:]
        for child, share in zip(list(self._children), shares):
            if share and not child.send(share):  # the worker stopped after a failure: raise it
                self._children.remove(child)
                answer = child.result()
                raise _failure(answer if answer[0] != "ok" else ("error", "RepositoryError", errno.EIO,
                                                                 "an export worker process stopped early"))


class _Child(object):
    """A worker process: reads batches of file tasks from a pipe until its end, writes them with ``threads``
    threads, and answers with one message: ``("ok", files, bytes)`` or ``("error", class, errno, text)``."""

    def __init__(self, pid, tasks_fd, results_fd):
        self.pid = pid
        self._tasks_fd = tasks_fd
        self.results_fd = results_fd

    @classmethod
    def start(cls, repository, threads, siblings):
        downloader = repository.objects.downloader.forked()
        parent = os.getpid()
        tasks_read, tasks_write = os.pipe()
        results_read, results_write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (tasks_read, tasks_write, results_read, results_write):
                os.close(fd)
            raise
        if pid == 0:  # the worker; never returns
            status = 1
            try:
                _die_with(parent)
                for fd in [tasks_write, results_read] + [fd for s in siblings for fd in s._fds()]:
                    os.close(fd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _child_main(repository, downloader, threads, tasks_read, results_write)
                status = 0
            finally:
                os._exit(status)
        os.close(tasks_read)
        os.close(results_write)
        return cls(pid, tasks_write, results_read)

    def _fds(self):
        return [fd for fd in (self._tasks_fd, self.results_fd) if fd is not None]

    def send(self, tasks):
        """Send a batch of tasks; False if the worker has stopped reading (after a failure)."""
        try:
            _write_message(self._tasks_fd, tasks)
            return True
        except BrokenPipeError:
            return False

    def close_tasks(self):
        if self._tasks_fd is not None:
            os.close(self._tasks_fd)
            self._tasks_fd = None

    def result(self):
        """Wait for the worker to end; its answer (or an error saying how it died)."""
        self.close_tasks()
        try:
            answer = _read_message(self.results_fd)
        except (EOFError, OSError):  # it died while answering
            answer = None
        finally:
            os.close(self.results_fd)
            self.results_fd = None
        _, status = os.waitpid(self.pid, 0)
        if answer is not None:
            return answer
        how = ("was killed by signal {}".format(os.WTERMSIG(status)) if os.WIFSIGNALED(status) else
               "exited with status {}".format(os.WEXITSTATUS(status)))
        return ("error", "RepositoryError", errno.EIO, "an export worker process (pid {}) {} before it finished"
                .format(self.pid, how))

    def stop(self):
        """Ask the worker to give up the files it has not started (SIGTERM), and end its tasks."""
        self.close_tasks()
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def reap(self, deadline):
        """Wait for the worker to end until ``deadline`` (monotonic), then kill it."""
        while os.waitpid(self.pid, os.WNOHANG)[0] == 0:
            if time.monotonic() >= deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.02)
        for fd in self._fds():
            os.close(fd)
        self._tasks_fd = self.results_fd = None


def _die_with(parent):
    """End this worker with SIGKILL when the exporting process ends, even by ``kill -9`` (PR_SET_PDEATHSIG): the
    files it would still write are of no use then. Exits at once if that process has ended already."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                                            ctypes.c_ulong(0), ctypes.c_ulong(0))
    if os.getppid() != parent:
        os._exit(1)


def _child_main(repository, downloader, threads, tasks_fd, results_fd):
    stopping = threading.Event()  # SIGTERM from the parent: another worker failed
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    try:
        objects = ObjectFetcher(repository.objects.cache.forked(), downloader)
        try:
            objects.cache.defer_stores()
            answer = ("ok",) + _write_all(objects, threads, tasks_fd, stopping)
        finally:
            objects.close()  # records the deferred stores
    except Exception as exc:
        answer = ("error", type(exc).__name__, getattr(exc, "errno", None) or errno.EIO, error_text(exc))
    _write_message(results_fd, answer)


def _write_all(objects, threads, tasks_fd, stopping):
    """Write the files of the tasks read from ``tasks_fd`` until its end; ``(files, bytes)``. At the first
    failure, or when ``stopping`` is set, the files not started are given up and the failure is raised (once
    the files being written are done)."""
    stop = threading.Event()  # a file failed
    finished = threading.Event()  # every file submitted is done
    futures = []
    count = [0, None]  # files done, files submitted (None while reading)
    lock = threading.Lock()

    def done(future):
        if not future.cancelled() and future.exception() is not None:
            stop.set()
        with lock:
            count[0] += 1
            if count[0] == count[1]:
                finished.set()

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        try:
            while not (stop.is_set() or stopping.is_set()):
                tasks = _read_message(tasks_fd)
                if tasks is None:
                    break
                for task in tasks:
                    future = pool.submit(_write_file, objects, task)
                    futures.append(future)
                    future.add_done_callback(done)
            with lock:
                count[1] = len(futures)
                if count[0] == count[1]:
                    finished.set()
            while not (stop.is_set() or stopping.is_set() or finished.wait(STOP_POLL)):
                pass
        finally:
            for future in futures:
                future.cancel()  # those not started yet; the pool's end waits for the others
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()
    if any(future.cancelled() for future in futures):
        raise RepositoryError(errno.EINTR, "stopped by the exporting process")
    return len(futures), sum(future.result() for future in futures)


def _failure(answer):
    """The exception to raise in this process for a worker's ``("error", class, errno, text)``."""
    _, kind, code, text = answer
    if kind == "CacheError":
        return CacheError(text)
    if kind == "FileExistsError":
        return FileExistsError(errno.EEXIST, text)
    return RepositoryError(code, text)


def _write_message(fd, value):
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_message(fd):
    """The next message, or None at the end of the pipe."""
    header = _read_exactly(fd, _LENGTH.size)
    if header is None:
        return None
    data = _read_exactly(fd, _LENGTH.unpack(header)[0])
    if data is None:
        raise EOFError("a message between export processes was cut short")
    return pickle.loads(data)


def _read_exactly(fd, size):
    parts = []
    while size:
        part = os.read(fd, min(size, 1 << 20))
        if not part:
            return None
        parts.append(part)
        size -= len(part)
    return b"".join(parts)
