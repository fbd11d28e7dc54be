"""Mount requests from a running job: ``$CVMFSMOUNT repo`` and ``$CVMFSUMOUNT repo`` (cvmfsexec's names).

The job cannot mount (it has no privilege, not even inside the namespace), so the process that mounted the
others serves requests on a Unix socket in the pilot's run directory (mode 0700: only the pilot's user can
connect). One request per connection: a JSON line ``{"op": "mount"|"umount", "repository": NAME}``, answered by
``{"ok": true, "message": ...}`` or ``{"ok": false, "error": ...}``. The two commands are small scripts that run
``cvmfs-pilot node request``.
"""

import json
import os
import socket

from cvmfs_pilot.node import atomic_file

SOCKET_NAME = "control.sock"
MOUNT_SCRIPT = "cvmfs-mount"
UMOUNT_SCRIPT = "cvmfs-umount"
ENV_SOCKET = "CVMFS_PILOT_CONTROL"
MAX_REQUEST = 4096
OPERATIONS = ("mount", "umount")


def _in_directory(path, action):
    """Run action(name) with the cwd at path's directory: a socket path may be longer than sun_path allows."""
    directory, name = os.path.split(path)
    previous = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.chdir(directory)
        return action(name)
    finally:
        os.fchdir(previous)
        os.close(previous)


class ControlServer(object):
    def __init__(self, path):
        self.path = path
        if os.path.lexists(path):
            os.unlink(path)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _in_directory(path, self.socket.bind)
        os.chmod(path, 0o600)
        self.socket.listen(8)

    def fileno(self):
        return self.socket.fileno()

    def serve_one(self, handle):
        """Accept one connection and answer it with handle(op, repository) -> message (ValueError/OSError
        become errors)."""
        connection, _ = self.socket.accept()
        with connection:
            connection.settimeout(10)
            try:
                request = json.loads(_read_line(connection).decode("utf-8"))
                op, repository = request["op"], request["repository"]
                if op not in OPERATIONS or not isinstance(repository, str):
                    raise ValueError("unknown request {!r}".format(request))
                answer = {"ok": True, "message": handle(op, repository)}
            except (ValueError, KeyError, TypeError, OSError) as exc:
                answer = {"ok": False, "error": str(exc)}
            try:
                connection.sendall(json.dumps(answer).encode("utf-8") + b"\n")
            except OSError:
                pass  # the requester went away

    def close(self):
        self.socket.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _read_line(connection):
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
    return data


def request(path, op, repository):
    """Send one request; returns the pilot's message, raises RuntimeError with its error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            _in_directory(path, connection.connect)
        except OSError as exc:
            raise RuntimeError("cannot reach the pilot at {} ({}); is this running inside 'cvmfs-pilot node "
                               "exec'?".format(path, exc.strerror))
        connection.sendall(json.dumps({"op": op, "repository": repository}).encode("utf-8") + b"\n")
        answer = json.loads(_read_line(connection).decode("utf-8") or "{}")
    if not answer.get("ok"):
        raise RuntimeError(answer.get("error") or "the pilot gave no answer")
    return answer.get("message", "")


def write_scripts(directory, command, socket_path):
    """The cvmfs-mount and cvmfs-umount scripts in directory; returns their paths."""
    paths = {}
    for name, op in ((MOUNT_SCRIPT, "mount"), (UMOUNT_SCRIPT, "umount")):
        words = command + ["node", "request", "--socket", socket_path, op]
        text = "#!/bin/sh\n# {} a repository in this pilot: {} REPOSITORY\nexec {} \"$@\"\n".format(
            op, name, " ".join(_shell_quote(word) for word in words))
        path = os.path.join(directory, name)
        atomic_file.write_atomically(path, text.encode("utf-8", "surrogateescape"), mode=0o700)
        paths[op] = path
    return paths


def _shell_quote(word):
    return "'" + word.replace("'", "'\\''") + "'"
