"""``node exec``: mount the repositories in the chosen mode, run the job, forward signals, clean up.

Process trees (see ../shared/reference/linux-namespaces.md for the kernel rules):

* ``userns``::

    pilot (host namespaces; forwards signals; removes its run directory at the end)
    └─ S  unshare(USER|NS[|PID]); maps "0 <uid> 1"; subreaper; cleans up if the pilot dies
       └─ I  PID 1 of the PID namespace; dies with S; private root, /cvmfs, servers, control socket
          ├─ servers (engine in the foreground, each dying with I)
          └─ job  in a nested user namespace mapped back to the user's own uid/gid, own process group

  After ``kill -9`` of the pilot, S is signalled (PR_SET_PDEATHSIG): it kills I, and with it (PID namespace)
  everything in it; the mount namespace and its mounts go with the last process. S also kills what was
  reparented to it (without a PID namespace, where /proc is masked: the job's background processes), removes
  the run directory and exits.
* ``fusermount``: the pilot mounts below ``<work dir>/cvmfs`` through the setuid helper, runs the job in its own
  process group and records everything for ``node cleanup``, since mounts outlive a ``kill -9``.
* ``native`` and ``none``: the job runs as a child; ``export``: the declared subtrees are copied first.
"""

import errno
import logging
import os
import select
import shutil
import signal
import stat
import sys

from cvmfs_pilot.client.cache import CacheError
from cvmfs_pilot.client.export import export
from cvmfs_pilot.client.repository import error_text
from cvmfs_pilot.client.session import open_repository
from cvmfs_pilot.node import cleanup, control, decide, engines, mounter, namespaces, records

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                     signal.SIGQUIT, signal.SIGALRM)
EXIT_SETUP_FAILED = 3  # CVMFS could not be provided (the job did not run)
ROOT_NAME = "root"
STARTED = b"S"


class SetupFailed(Exception):
    """The mode could not be set up; the job has not started."""


class JobNotExecutable(OSError):
    """The job's command could not be executed (exit status 127, as a shell gives)."""


EXIT_NOT_EXECUTABLE = 127


class ExecRequest(object):
    """What to run and how: ``engine`` an engines.*Engine (None for native, export, none)."""

    def __init__(self, work_dir, repositories, command, engine=None, overrides=None, environ=None, cwd=None,
                 subtrees=(), export_config_dir=None):
        self.work_dir = os.path.abspath(work_dir)
        self.repositories = list(repositories)
        self.command = list(command)
        self.engine = engine
        self.overrides = dict(overrides or {})
        self.environ = dict(os.environ if environ is None else environ)
        self.cwd = cwd or os.getcwd()
        self.subtrees = list(subtrees)
        self.export_config_dir = export_config_dir
        self.run_dir = records.RunDirectory(self.work_dir)
        self.mount_dir = os.path.join(self.work_dir, decide.MOUNT_DIR_NAME)


# -- exit statuses and signals ----------------------------------------------------------------------------------

def exit_status(wait_status):
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


class _Signals(object):
    """Signals to forward and SIGCHLD, delivered through a pipe that select() watches."""

    def __init__(self):
        self.readable, self.writable = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.pending = []
        self._previous = {}
        for number in FORWARDED_SIGNALS + (signal.SIGCHLD,):
            self._previous[number] = signal.signal(number, self._on_signal)
        self._previous_fd = signal.set_wakeup_fd(self.writable)

    def _on_signal(self, number, frame):
        if number != signal.SIGCHLD:
            self.pending.append(number)

    def drain(self):
        try:
            while os.read(self.readable, 512):
                pass
        except BlockingIOError:
            pass
        pending, self.pending = self.pending, []
        return pending

    def close(self):
        signal.set_wakeup_fd(self._previous_fd)
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        os.close(self.readable)
        os.close(self.writable)


def _reset_signals():
    for number in FORWARDED_SIGNALS + (signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)


def forward_until_exit(child):
    """In a plain intermediate process: forward signals to child until it ends; its wait status."""
    signals = _Signals()
    try:
        while True:
            for number in signals.drain():
                _send(child, number)
            try:
                pid, status = os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                return 1 << 8
            if pid == child:
                return status
            select.select([signals.readable], [], [])
    finally:
        signals.close()


def _send(pid, number, group=False):
    try:
        if group:
            os.killpg(pid, number)
        else:
            os.kill(pid, number)
    except OSError:
        pass


# -- the job ------------------------------------------------------------------------------------------------------

class Job(object):
    def __init__(self, pid, own_group):
        self.pid = pid
        self.own_group = own_group

    def signal(self, number):
        _send(self.pid, number, group=self.own_group)


def start_job(command, environ, cwd, nested_ids=None):
    """Fork and exec the job; with nested_ids (uid, gid), in a new user namespace mapping them back to the user
    (the forking process being namespace root). The job gets its own process group unless it reads a terminal
    (job control stays with the shell), and dies with its parent. OSError if it cannot be executed."""
    own_group = not os.isatty(0)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(go_w)
            os.close(error_r)
            namespaces.die_with_parent()
            if nested_ids is not None:
                namespaces.unshare(namespaces.CLONE_NEWUSER, "CLONE_NEWUSER for the job")
            os.write(ready_w, b"r")
            if os.read(go_r, 1) != b"g":
                os._exit(EXIT_SETUP_FAILED)
            if own_group:
                os.setpgid(0, 0)
            _reset_signals()
            try:
                os.chdir(cwd)
            except OSError:
                os.chdir(environ.get("HOME") or "/")
            os.execvpe(command[0], command, environ)
        except BaseException as exc:
            message = "{}: {}".format(command[0], exc.strerror if isinstance(exc, OSError) and exc.strerror
                                      else exc)
            try:
                os.write(error_w, message.encode("utf-8", "replace"))
            finally:
                os._exit(127)
    os.close(ready_w)
    os.close(go_r)
    os.close(error_w)
    try:
        if os.read(ready_r, 1) == b"r":
            if nested_ids is not None:
                uid, gid = nested_ids
                namespaces.write_id_maps(pid, uid, 0, gid, 0)
            if own_group:
                try:
                    os.setpgid(pid, pid)  # also here, so that signals reach the group from the start
                except OSError:
                    pass
            os.write(go_w, b"g")
        os.close(go_w)
        failure = os.read(error_r, 4096)
    finally:
        os.close(ready_r)
        os.close(error_r)
    if failure:
        os.waitpid(pid, 0)
        raise JobNotExecutable(errno.ENOEXEC, "cannot run the job: " + failure.decode("utf-8", "replace"))
    return Job(pid, own_group)


def supervise(job, mounts=None, server=None):
    """Wait for the job, forwarding signals to it, answering mount requests (server, for mounts), reaping
    other children (PID 1, subreaper). The job's wait status."""
    signals = _Signals()
    try:
        while True:
            for number in signals.drain():
                job.signal(number)
            status = _reap(job, mounts)
            if status is not None:
                return status
            watched = [signals.readable] + ([server] if server is not None else [])
            try:
                ready, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            if server is not None and server in ready:
                server.serve_one(lambda op, repo: _handle(mounts, op, repo))
    finally:
        signals.close()


def _handle(mounts, op, repository):
    if op == "mount":
        mounted = mounts.mount(repository)
        return "{} is mounted on {}".format(repository, mounted.mountpoint)
    mounts.unmount(repository)
    return "{} is unmounted".format(repository)


def _reap(job, mounts):
    """Reap every child that has ended; the job's wait status once it has."""
    servers = {} if mounts is None else {m.process.pid: m for m in mounts.mounted.values()}
    job_status = None
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None or info.si_pid == 0:
            break
        pid = info.si_pid
        if pid in servers:
            servers[pid].process.wait()
            mounts.forget_server(pid)
            continue
        _, status = os.waitpid(pid, 0)
        if pid == job.pid:
            job_status = status
    return job_status


# -- modes ----------------------------------------------------------------------------------------------------

def run_plain(request, extra_environ=None):
    """native, none, export: the job as a child of this process."""
    environ = dict(request.environ, **(extra_environ or {}))
    namespaces.become_subreaper()
    try:
        job = start_job(request.command, environ, request.cwd)
    except JobNotExecutable as exc:
        _report(exc)
        return EXIT_NOT_EXECUTABLE
    return exit_status(supervise(job))


def run_export(request):
    opened = {}
    try:
        for subtree in request.subtrees:
            fqrn, _, path = subtree.partition("/")
            mounter.check_repository_name(fqrn)
            if fqrn not in opened:
                opened[fqrn] = open_repository(fqrn, request.export_config_dir, request.overrides)
            path = "/" + path.strip("/")
            is_directory = stat.S_ISDIR(opened[fqrn].stat(path).st_mode)
            destination = os.path.join(request.mount_dir, fqrn, (path if is_directory else
                                                                 os.path.dirname(path)).lstrip("/"))
            export(opened[fqrn], path, destination)
    except (OSError, ValueError, CacheError) as exc:
        raise SetupFailed("cannot export {}: {}".format(", ".join(request.subtrees), error_text(exc)))
    finally:
        for repository in opened.values():
            repository.close()
    return run_plain(request, {"CVMFS_MOUNT_DIR": request.mount_dir})


def _job_environ(request, scripts, socket_path, mount_dir=None):
    environ = dict(request.environ)
    environ.update(CVMFSMOUNT=scripts["mount"], CVMFSUMOUNT=scripts["umount"])
    environ[control.ENV_SOCKET] = socket_path
    if mount_dir is not None:
        environ["CVMFS_MOUNT_DIR"] = mount_dir
    return environ


def _mount_all(mounts, repositories):
    try:
        mounts.mount_all(mounts.with_config_repository(repositories))
    except (OSError, ValueError) as exc:
        errors = mounts.unmount_all()
        raise SetupFailed(str(exc) + "".join("; then: " + e for e in errors))


def run_fusermount(request):
    run_dir = request.run_dir
    state = {"mode": decide.FUSERMOUNT, "pilot": records.process_record(os.getpid()),
             "mount_dir": request.mount_dir, "mounts": [], "servers": [], "job": None}

    def save():
        state["mounts"] = [m.mountpoint for m in mounts.mounted.values()]
        state["servers"] = [records.process_record(pid) for pid in mounts.server_pids()]
        run_dir.save(state)

    def make_directory(fqrn):
        path = os.path.join(request.mount_dir, fqrn)
        os.makedirs(path, exist_ok=True)
        return path

    namespaces.become_subreaper()
    os.makedirs(request.mount_dir, exist_ok=True)
    mounts = mounter.Mounter(request.engine, request.mount_dir, run_dir.path, request.overrides, make_directory,
                             save)
    save()
    server = None
    try:
        _mount_all(mounts, request.repositories)
        socket_path = run_dir.join(control.SOCKET_NAME)
        server = control.ControlServer(socket_path)
        scripts = control.write_scripts(run_dir.path, engines.self_command(), socket_path)
        try:
            job = start_job(request.command, _job_environ(request, scripts, socket_path, request.mount_dir),
                            request.cwd)
        except JobNotExecutable as exc:
            _report(exc)
            return EXIT_NOT_EXECUTABLE
        state["job"] = dict(records.process_record(job.pid), group=job.own_group)
        save()
        return exit_status(supervise(job, mounts, server))
    finally:
        if server is not None:
            server.close()
        for error in mounts.unmount_all():
            log.warning("%s", error)
        cleanup.end_job_group(state.get("job"))
        cleanup.remove_mount_directories(request.mount_dir)


def run_userns(request, pid_namespace):
    """Fork S and I (see the module's docstring); the job's exit status. SetupFailed if I could not mount."""
    root = request.run_dir.join(ROOT_NAME)
    os.makedirs(root, exist_ok=True)
    request.run_dir.save({"mode": decide.USERNS, "pilot": records.process_record(os.getpid()),
                          "pid_namespace": pid_namespace})
    started_r, started_w = os.pipe2(os.O_CLOEXEC)
    uid, gid = os.getuid(), os.getgid()
    pilot = os.getpid()
    s = os.fork()
    if s == 0:
        code = EXIT_SETUP_FAILED
        try:
            os.close(started_r)
            namespaces.prctl(namespaces.PR_SET_PDEATHSIG, signal.SIGHUP)
            if os.getppid() != pilot:
                os._exit(code)
            namespaces.become_subreaper()
            namespaces.enter(uid, gid, pid_namespace)
            alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
            i = os.fork()
            if i == 0:
                os.close(alive_w)
                _init(request, root, uid, gid, pid_namespace, started_w, alive_r)
            os.close(alive_r)
            code = _outer(i, pilot, request.run_dir)
        except BaseException as exc:
            _report(exc)
        finally:
            os._exit(code)
    os.close(started_w)
    status = exit_status(forward_until_exit(s))
    started = os.read(started_r, 1) == STARTED
    os.close(started_r)
    if not started:
        raise SetupFailed("the user namespace could not be set up (exit status {}); see the messages above".format(
            status))
    return status


def _outer(i, pilot, run_dir):
    """S: forward signals to I until it ends (its exit status); if the pilot dies first, end I and everything
    reparented to S, remove the run directory, and return 128 + SIGKILL."""
    signals = _Signals()
    try:
        while os.getppid() == pilot:
            for number in signals.drain():
                if os.getppid() == pilot:
                    _send(i, number)
            status = _reap(Job(i, False), None)
            if status is not None:
                return exit_status(status)
            select.select([signals.readable], [], [], 1.0)
    finally:
        signals.close()
    _send(i, signal.SIGKILL)
    _end_children()
    cleanup.remove_run_directory(run_dir)
    return 128 + signal.SIGKILL


def _end_children():
    """SIGKILL this process's children until none is left (a subreaper collects orphans)."""
    me = str(os.getpid())
    while True:
        children = []
        for entry in os.listdir("/proc"):
            try:
                with open("/proc/{}/stat".format(entry)) as stat:
                    text = stat.read()
            except (OSError, ValueError):
                continue
            if text[text.rfind(")") + 2:].split()[1] == me:
                children.append(int(entry))
        if not children:
            return
        for child in children:
            _send(child, signal.SIGKILL)
        for child in children:
            try:
                os.waitpid(child, 0)
            except ChildProcessError:
                pass


def _report(exc):
    sys.stderr.write("cvmfs-pilot node exec: {}\n".format(exc.strerror if isinstance(exc, OSError) and exc.strerror
                                                          else exc))
    sys.stderr.flush()


def _init(request, root, uid, gid, pid_namespace, started_w, alive_r):
    """I: never returns."""
    code = EXIT_SETUP_FAILED
    server = None
    mounts = None
    try:
        namespaces.die_with_parent()
        if select.select([alive_r], [], [], 0)[0]:  # S ended before PR_SET_PDEATHSIG took effect
            os._exit(code)
        namespaces.become_subreaper()
        mounts = mounter.Mounter(request.engine, "/" + namespaces.CVMFS, request.run_dir.path, request.overrides,
                                 namespaces.add_repository_directory)
        repositories = mounts.with_config_repository(request.repositories)
        skipped = namespaces.build_private_root(root, repositories, pid_namespace)
        if skipped:
            log.info("host entries not reproduced in the private root: %s", ", ".join(skipped))
        _mount_all(mounts, repositories)
        socket_path = request.run_dir.join(control.SOCKET_NAME)
        server = control.ControlServer(socket_path)
        scripts = control.write_scripts(request.run_dir.path, engines.self_command(), socket_path)
        try:
            job = start_job(request.command, _job_environ(request, scripts, socket_path), request.cwd, (uid, gid))
        except JobNotExecutable as exc:
            os.write(started_w, STARTED)
            _report(exc)
            code = EXIT_NOT_EXECUTABLE
        else:
            os.write(started_w, STARTED)
            code = exit_status(supervise(job, mounts, server))
    except BaseException as exc:
        _report(exc)
    finally:
        try:
            if server is not None:
                server.close()
            if mounts is not None:
                for error in mounts.unmount_all():
                    log.warning("%s", error)
        finally:
            os._exit(code)


def run(request, mode, pid_namespace=True):
    """Run the request in mode; the job's exit status. SetupFailed when the mode cannot be set up (nothing of
    it is left behind then)."""
    if mode in (decide.NATIVE, decide.NONE):
        return run_plain(request)
    request.run_dir.acquire()
    try:
        cleanup.clean_stale(request.run_dir, request.mount_dir)
        if mode == decide.EXPORT:
            return run_export(request)
        if mode == decide.FUSERMOUNT:
            return run_fusermount(request)
        if mode == decide.USERNS:
            return run_userns(request, pid_namespace)
        raise ValueError("unknown mode {!r}".format(mode))
    finally:
        cleanup.remove_run_directory(request.run_dir)
        if mode == decide.EXPORT:
            shutil.rmtree(request.mount_dir, ignore_errors=True)
