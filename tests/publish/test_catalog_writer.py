"""A catalog written next to the previous revision's one: rows that repeat it are copied, never changed."""

import os
import sqlite3
import stat

import pytest

from cvmfs_pilot.cvmfs import catalog as fmt
from cvmfs_pilot.cvmfs.catalog import Chunk
from cvmfs_pilot.cvmfs.hashing import SHA1, ContentHash
from cvmfs_pilot.publish import catalog_writer
from cvmfs_pilot.publish.catalog_writer import CatalogWriter

FILES = 3000  # several batches of rows


def _write(filename, changed=None, extra=False, previous_file=None, revision=1, chunk_changed=False,
           nested_changed=False):
    """A catalog of FILES files, every 500th chunked, with one nested catalog; the options change one row."""
    writer = CatalogWriter(filename, "", previous_file)
    writer.add(path="", mode=stat.S_IFDIR | 0o755, size=4096, mtime=1, mtimens=0, flags=fmt.FLAG_DIR)
    for i in range(FILES):
        digest = bytes([i % 251]) * 20 if i != changed else b"\xff" * 20
        chunks = ()
        if i % 500 == 7:
            last = b"\xee" * 20 if chunk_changed and i == 1507 else b"\x01" * 20
            chunks = [Chunk(0, i // 2, ContentHash(SHA1, b"\x00" * 20)),
                      Chunk(i // 2, i - i // 2, ContentHash(SHA1, last))]
        writer.add(path="/f{:05d}".format(i), mode=stat.S_IFREG | 0o644, size=i, mtime=i, mtimens=0,
                   flags=fmt.FLAG_FILE | (fmt.FLAG_CHUNKED if chunks else 0), content_hash=ContentHash(SHA1, digest),
                   chunks=chunks)
    if extra:
        writer.add(path="/zz", mode=stat.S_IFREG | 0o644, size=0, mtime=0, mtimens=0, flags=fmt.FLAG_FILE)
    writer.add_nested("/nested", ContentHash(SHA1, (b"\x02" if nested_changed else b"\x03") * 20), 4096,
                      {"self_regular": 2})
    writer.finish(revision, 1000 + revision)
    return filename


def _rows(filename):
    db = sqlite3.connect(str(filename))
    try:
        return {table: db.execute("SELECT rowid, * FROM {} ORDER BY rowid".format(table)).fetchall()
                for table in ("catalog", "chunks", "nested_catalogs", "statistics")}, dict(
            db.execute("SELECT key, value FROM properties"))
    finally:
        db.close()


@pytest.mark.parametrize("change", [dict(), dict(changed=0), dict(changed=FILES - 1), dict(changed=2500),
                                    dict(extra=True), dict(chunk_changed=True), dict(nested_changed=True)])
def test_rows_are_those_of_a_fresh_catalog(tmp_path, change):
    previous = _write(tmp_path / "previous.db")
    fresh = _write(tmp_path / "fresh.db", revision=2, **change)
    written = _write(tmp_path / "written.db", previous_file=previous, revision=2, **change)
    assert _rows(written) == _rows(fresh)
    assert _rows(written)[1]["revision"] == "2"


def test_fewer_rows_than_before(tmp_path):
    previous = _write(tmp_path / "previous.db", extra=True)
    fresh = _write(tmp_path / "fresh.db", revision=2)
    written = _write(tmp_path / "written.db", previous_file=previous, revision=2)
    assert _rows(written) == _rows(fresh)


@pytest.mark.parametrize("change, copied_file, copied_rows", [(dict(), True, None), (dict(changed=2500), False, 2048),
                                                              (dict(changed=0), False, 0)])
def test_repeated_rows_are_copied_not_inserted(tmp_path, monkeypatch, change, copied_file, copied_rows):
    """Which way the rows came: a copy of the whole file, or the rows before the first differing batch (of 1024)
    copied at once."""
    previous = _write(tmp_path / "previous.db")
    seen = []
    copy_repeated = catalog_writer._PreviousRows.copy_repeated
    monkeypatch.setattr(catalog_writer._PreviousRows, "copy_repeated",
                        lambda rows: seen.append(rows._entry_count) or copy_repeated(rows))
    reopen = CatalogWriter._reopen_copy_of_previous
    monkeypatch.setattr(CatalogWriter, "_reopen_copy_of_previous", lambda writer: seen.append("file") or reopen(writer))
    _write(tmp_path / "written.db", previous_file=previous, revision=2, **change)
    assert seen == (["file"] if copied_file else [copied_rows])


def _open_in_this_process(path):
    target = os.stat(str(path))
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            st = os.stat("/proc/self/fd/" + fd)
        except OSError:
            continue
        found.append((st.st_dev, st.st_ino) == (target.st_dev, target.st_ino))
    return any(found)


@pytest.mark.parametrize("finish", [False, True])
def test_a_writer_leaves_no_file_open_while_it_still_exists(tmp_path, finish):
    """Closing a connection with a statement still open leaves its files open until the statement is collected:
    a full-disk test could not unmount its file system while the failed writer lived on in a traceback."""
    previous = _write(tmp_path / "previous.db")
    writer = CatalogWriter(tmp_path / "written.db", "", previous)
    writer.add(path="", mode=stat.S_IFDIR | 0o755, size=4096, mtime=1, mtimens=0, flags=fmt.FLAG_DIR)
    for i in range(1500):  # one batch repeated, the next one started
        writer.add(path="/f{:05d}".format(i), mode=stat.S_IFREG | 0o644, size=i, mtime=i, mtimens=0,
                   flags=fmt.FLAG_FILE | (fmt.FLAG_CHUNKED if i % 500 == 7 else 0),
                   content_hash=ContentHash(SHA1, bytes([i % 251]) * 20),
                   chunks=[Chunk(0, i // 2, ContentHash(SHA1, b"\x00" * 20)),
                           Chunk(i // 2, i - i // 2, ContentHash(SHA1, b"\x01" * 20))] if i % 500 == 7 else ())
    assert _open_in_this_process(previous)
    if finish:
        writer.finish(2, 1002)
    else:
        writer.abort()
    assert not _open_in_this_process(previous)
    assert not _open_in_this_process(tmp_path / "written.db")
