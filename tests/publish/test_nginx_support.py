"""tests/support/nginx.py: nginx serves a storage directory with production headers and leaves nothing running."""

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support import nginx as nginx_support
from support.nginx import NginxError, nginx_serving

FQRN = "test.cern.ch"
MANIFEST = b"C0123\nNtest.cern.ch\n--\nsignature"
OBJECT = bytes(range(256)) * 64


@pytest.fixture
def storage(tmp_path):
    """A storage directory holding one repository with a manifest and one object."""
    repo = tmp_path / "storage" / FQRN
    (repo / "data" / "ab").mkdir(parents=True)
    (repo / ".cvmfspublished").write_bytes(MANIFEST)
    (repo / "data" / "ab" / "cdef").write_bytes(OBJECT)
    return tmp_path / "storage"


def get(url, headers=None):
    """(status, headers, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def process_group(pgid):
    """Pids of the live (not zombie) processes in a process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def test_serves_storage_like_production_and_stops_completely(storage, tmp_path):
    with nginx_serving(storage, tmp_path / "nginx") as base_url:
        master = int((tmp_path / "nginx" / "nginx.pid").read_text())
        assert len(process_group(master)) >= 2  # the master and its worker

        status, headers, body = get(f"{base_url}/{FQRN}/.cvmfspublished")
        assert (status, body) == (200, MANIFEST)
        assert headers["Cache-Control"] == "max-age=61"
        assert headers["Content-Length"] == str(len(MANIFEST))

        status, headers, body = get(f"{base_url}/{FQRN}/data/ab/cdef")
        assert (status, body) == (200, OBJECT)
        assert headers["Cache-Control"] == "max-age=259200"
        assert headers["Content-Type"] == "application/octet-stream"
        assert "ETag" not in headers and "Last-Modified" not in headers

        status, headers, body = get(f"{base_url}/{FQRN}/data/ab/cdef", {"Range": "bytes=10-19"})
        assert (status, body) == (206, OBJECT[10:20])
        assert headers["Content-Range"] == f"bytes 10-19/{len(OBJECT)}"

        assert get(f"{base_url}/{FQRN}/data/ab/missing")[0] == 404
        assert get(f"{base_url}/{FQRN}/data/")[0] == 403
    assert process_group(master) == []


def test_fixture_serves_a_directory(nginx, storage):
    base_url = nginx(storage)
    assert get(f"{base_url}/{FQRN}/.cvmfspublished")[2] == MANIFEST


def test_port_taken_before_nginx_binds_it_is_replaced(storage, tmp_path, monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = iter([squatter.getsockname()[1]])
        choose_free_port = nginx_support.free_port
        monkeypatch.setattr(nginx_support, "free_port", lambda: next(ports, None) or choose_free_port())
        with nginx_serving(storage, tmp_path / "nginx") as base_url:
            assert f":{squatter.getsockname()[1]}/" not in base_url
            assert get(f"{base_url}/{FQRN}/.cvmfspublished")[2] == MANIFEST


def test_failed_start_reports_the_error_log(storage, tmp_path, monkeypatch):
    monkeypatch.setattr(nginx_support, "CONFIG", nginx_support.CONFIG.replace("sendfile on;", "sendfile maybe;"))
    with pytest.raises(NginxError, match=r"(?s)exited with status 1 before serving.*invalid value \"maybe\""):
        with nginx_serving(storage, tmp_path / "nginx"):
            pass
