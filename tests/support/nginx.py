"""A private nginx (Debian's nginx-light) serving a directory the way a production Stratum server does.

``nginx_serving(root_dir, tmp_dir)`` maps ``<base_url>/<fqrn>/...`` to ``<root_dir>/<fqrn>/...``, with base_url
``http://127.0.0.1:PORT/cvmfs``, and the headers of docs/nginx.md: ``.cvmfs*`` files and ``*.json`` expire after
61 s, everything else after 3 days; no ETag or Last-Modified; sendfile.

Everything nginx reads or writes stays in tmp_dir: ``nginx.conf``, ``nginx.pid`` (the master's pid),
``error.log``, ``access.log``, ``nginx.out`` (its stdout and stderr) and ``temp/``. Run as root, the workers run
as root too (``user`` directive), so they can read pytest's private tmp_path; otherwise nginx cannot switch users
and the workers run as the invoking user. Either way nginx can serve whatever the tests can read.
"""

import contextlib
import grp
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from support.ports import accepts_connections, free_port

NGINX = Path("/usr/sbin/nginx")
START_TIMEOUT = 10.0  # seconds until the port must answer
STOP_TIMEOUT = 10.0  # seconds for a graceful stop before SIGKILL
PORT_ATTEMPTS = 5

CONFIG = """\
# Written by tests/support/nginx.py for one test; see docs/nginx.md for production.
daemon off;
master_process on;
worker_processes 1;
{user_directive}pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;

events {{
    worker_connections 128;
}}

http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/temp/client_body;
    proxy_temp_path {tmp}/temp/proxy;
    fastcgi_temp_path {tmp}/temp/fastcgi;
    uwsgi_temp_path {tmp}/temp/uwsgi;
    scgi_temp_path {tmp}/temp/scgi;

    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65s;
    etag off;
    if_modified_since off;

    map $uri $cvmfs_expires {{
        default         3d;
        ~/\\.cvmfs[^/]*$ 61s;
        ~\\.json$        61s;
    }}

    server {{
        listen 127.0.0.1:{port};
        location /cvmfs/ {{
            alias {root}/;
            expires $cvmfs_expires;
            add_header Last-Modified "";
        }}
    }}
}}
"""


class NginxError(RuntimeError):
    """nginx could not be started."""


class PortTaken(Exception):
    """Another process took the port between choosing it and nginx binding it."""


@contextlib.contextmanager
def nginx_serving(root_dir, tmp_dir):
    """Run nginx serving root_dir at the yielded base URL, ``http://127.0.0.1:PORT/cvmfs``; stop it on exit."""
    root = Path(root_dir).resolve()
    tmp = Path(tmp_dir).resolve()
    if not NGINX.exists():
        raise NginxError(f"{NGINX} is missing; run scripts/setup.sh, which installs nginx-light")
    if not root.is_dir():
        raise NginxError(f"cannot serve {root}: not a directory")
    (tmp / "temp").mkdir(parents=True, exist_ok=True)
    process, port = start(root, tmp)
    try:
        yield f"http://127.0.0.1:{port}/cvmfs"
    finally:
        stop(process)


def start(root, tmp):
    """Start nginx on a free loopback port: (process, port). A port taken meanwhile is replaced by another."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(CONFIG.format(tmp=tmp, root=root, port=port, user_directive=user_directive()))
        for stale in ("nginx.pid", "error.log", "nginx.out"):
            (tmp / stale).unlink(missing_ok=True)
        with open(tmp / "nginx.out", "wb") as output:
            process = subprocess.Popen(
                [str(NGINX), "-p", f"{tmp}/", "-e", str(tmp / "error.log"), "-c", str(conf)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_listening(process, port, tmp)
        except PortTaken:
            continue
        except BaseException:
            stop(process)
            raise
        return process, port
    raise NginxError(f"nginx found each of {PORT_ATTEMPTS} free ports taken before it could bind them; "
                     f"something on this host is grabbing loopback ports, see {tmp / 'error.log'}")


def user_directive():
    """Run the workers as the invoking user: root cannot otherwise read into pytest's private directories."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"


def wait_until_listening(process, port, tmp):
    """Return once nginx has written its pid file (so it has bound the port) and the port accepts connections."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            logs = nginx_logs(tmp)
            if "Address already in use" in logs:
                raise PortTaken()
            raise NginxError(f"nginx exited with status {process.returncode} before serving; it said:\n{logs}")
        if pid_written(tmp / "nginx.pid", process.pid) and accepts_connections(port):
            return
        time.sleep(0.02)
    raise NginxError(f"nginx did not answer on 127.0.0.1:{port} within {START_TIMEOUT:g} s; it said:\n"
                     f"{nginx_logs(tmp)}")


def pid_written(pid_file, pid):
    try:
        return pid_file.read_text().strip() == str(pid)
    except FileNotFoundError:
        return False


def nginx_logs(tmp):
    """nginx's error log and its own output, for error messages."""
    parts = []
    for name in ("error.log", "nginx.out"):
        path = tmp / name
        text = path.read_text(errors="replace").strip() if path.exists() else ""
        parts.append(f"--- {path} ---\n{text or '(empty)'}")
    return "\n".join(parts)


def stop(process):
    """Stop nginx gracefully (SIGQUIT to the master); after STOP_TIMEOUT, SIGKILL its whole process group."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGQUIT)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the master is not reaped yet, so its pid still names its group
        process.wait()
