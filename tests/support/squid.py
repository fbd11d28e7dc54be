"""A private squid (Debian's squid) on a loopback port: a real caching HTTP proxy for the client tests.

``squid_proxy(tmp_dir)`` runs ``squid -N`` (foreground, one process) and yields its URL,
``http://127.0.0.1:PORT``. It caches in memory only, allows requests from localhost only and stops at once
(``shutdown_lifetime 0``). On exit squid is stopped and nothing of it is left: no process, no shared memory.

Everything squid reads or writes is in tmp_dir: ``squid.conf``, ``cache.log`` (its stderr) and ``access.log``
(its stdout). Squid refuses to run as root: started by root, it switches to ``cache_effective_user`` (Debian's
``proxy``) after reading its configuration, and that user cannot enter pytest's private tmp directories. So
squid opens no file by name after the switch: its logs are the stdout and stderr this module opens for it
(given to that user, and reopened through ``/proc/self/fd``), and it writes no pid file and no core dump.
The shared-memory segments squid always creates are named after a service name unique to the instance
(``-n``); those of a squid that died without removing them are removed here.
"""

import contextlib
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from support.ports import accepts_connections, free_port

SQUID = Path("/usr/sbin/squid")
SQUID_USER = "proxy"  # Debian's cache_effective_user
START_TIMEOUT = 15.0  # seconds until the port must answer
STOP_TIMEOUT = 10.0  # seconds for squid to stop before SIGKILL
PORT_ATTEMPTS = 5
SHARED_MEMORY = Path("/dev/shm")

CONFIG = """\
# Written by tests/support/squid.py for one test.
http_port 127.0.0.1:{port}
http_access allow localhost
http_access deny all
{user_directive}
# Memory-only cache: no cache_dir.
cache_mem 32 MB
memory_cache_shared off
maximum_object_size_in_memory 8 MB
maximum_object_size 8 MB
refresh_pattern . 0 20% 4320

# No file opened by name after dropping root: logs go to the inherited stdout and stderr.
cache_log /proc/self/fd/2
access_log stdio:/proc/self/fd/1
cache_store_log none
pid_filename none
coredump_dir none
netdb_filename none

# Nothing beyond the loopback port: no helpers, no DNS servers, no other sockets.
pinger_enable off
dns_nameservers 127.0.0.1
udp_incoming_address 127.0.0.1
udp_outgoing_address 127.0.0.1
icp_port 0
htcp_port 0
visible_hostname localhost
shutdown_lifetime 0 seconds
"""


class SquidError(RuntimeError):
    """squid could not be started."""


class PortTaken(Exception):
    """Another process took the port between choosing it and squid binding it."""


@contextlib.contextmanager
def squid_proxy(tmp_dir):
    """Run squid on a loopback port and yield its URL, ``http://127.0.0.1:PORT``; stop it on exit."""
    tmp = Path(tmp_dir).resolve()
    if not SQUID.exists():
        raise SquidError(f"{SQUID} is missing; run scripts/setup.sh, which installs squid")
    tmp.mkdir(parents=True, exist_ok=True)
    process, port, service = start(tmp)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process, service)


def start(tmp):
    """Start squid on a free loopback port: (process, port, service name). A port taken meanwhile is replaced."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        service = f"cvmfspilotsquid{port}"
        conf = tmp / "squid.conf"
        conf.write_text(CONFIG.format(port=port, user_directive=user_directive()))
        with log_file(tmp / "access.log") as access_log, log_file(tmp / "cache.log") as cache_log:
            process = subprocess.Popen([str(SQUID), "-N", "-n", service, "-f", str(conf)],
                                       stdin=subprocess.DEVNULL, stdout=access_log, stderr=cache_log,
                                       start_new_session=True)
        try:
            wait_until_listening(process, port, tmp)
        except PortTaken:
            remove_shared_memory(service)
            continue
        except BaseException:
            stop(process, service)
            raise
        return process, port, service
    raise SquidError(f"squid found each of {PORT_ATTEMPTS} free ports taken before it could bind them; "
                     f"see {tmp / 'cache.log'}")


def user_directive():
    """As root, name the user squid switches to (it refuses to stay root); otherwise squid stays who it is."""
    return f"cache_effective_user {SQUID_USER}" if os.geteuid() == 0 else ""


@contextlib.contextmanager
def log_file(path):
    """A new file for squid to write to through an inherited descriptor, owned by the user squid runs as."""
    with open(path, "wb") as stream:
        if os.geteuid() == 0:
            user = pwd.getpwnam(SQUID_USER)
            os.fchown(stream.fileno(), user.pw_uid, user.pw_gid)
        yield stream


def wait_until_listening(process, port, tmp):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (tmp / "cache.log").read_text(errors="replace")
            if "Address already in use" in log:
                raise PortTaken()
            raise SquidError(f"squid exited with status {process.returncode} before serving; it said:\n{log}")
        if accepts_connections(port):
            return
        time.sleep(0.05)
    raise SquidError(f"squid did not answer on 127.0.0.1:{port} within {START_TIMEOUT:g} s; it said:\n"
                     f"{(tmp / 'cache.log').read_text(errors='replace')}")


def stop(process, service):
    """Stop squid (SIGINT: shut down now); after STOP_TIMEOUT, SIGKILL its process group. Then remove the
    shared memory it may have left."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # not reaped yet, so its pid still names its group
            process.wait()
    remove_shared_memory(service)


def remove_shared_memory(service):
    for segment in SHARED_MEMORY.glob(f"{service}-*"):
        segment.unlink(missing_ok=True)
