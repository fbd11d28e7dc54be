"""Publishing directory trees: what lands in the catalogs and objects, revisions, incremental runs, atomicity."""

import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from cvmfs_pilot.cvmfs import catalog as fmt
from cvmfs_pilot.cvmfs import xattrs
from cvmfs_pilot.cvmfs.compression import NONE
from cvmfs_pilot.cvmfs.hashing import RMD160, SHAKE128
from cvmfs_pilot.cvmfs.history import read_tags
from cvmfs_pilot.cvmfs.hashing import SUFFIX_HISTORY, SUFFIX_METAINFO
from cvmfs_pilot.cvmfs.compression import decompress
from cvmfs_pilot.publish.errors import PublishError
from cvmfs_pilot.publish.storage import Storage

from support.repo import SMALL_CHUNKS, StoredRepository, make_keys, publish_tree, read_manifest

FQRN = "pub.example.org"


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path / "keys", FQRN)


def write(path, data, mtime_ns=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def make_tree(root):
    """A tree with every kind of entry the publisher handles."""
    write(root / "hello.txt", b"hello world\n", mtime_ns=1_600_000_000_123_456_789)
    write(root / "empty", b"")
    write(root / "big.bin", os.urandom(100_000))  # chunked with SMALL_CHUNKS
    os.link(root / "hello.txt", root / "hello-link.txt")
    os.symlink("$(CVMFS_ARCH)/lib", root / "varlink")
    os.symlink("hello.txt", root / "rel-link")
    os.mkfifo(root / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock"))
    sock.close()
    os.setxattr(root / "hello.txt", "user.color", b"blue")
    write(root / "dir" / "sub" / "deep.txt", b"deep\n")
    os.chmod(root / "dir" / "sub" / "deep.txt", 0o751)
    write(root / "nested" / ".cvmfscatalog", b"")
    write(root / "nested" / "inner" / "file", b"inner\n")
    write(root / "dirtab" / "a" / "x", b"a\n")
    write(root / "dirtab" / "b" / "y", b"b\n")
    write(root / "dirtab" / ".hidden" / "z", b"hidden\n")
    write(root / ".cvmfsdirtab", b"# comment\n/dirtab/*\n!/dirtab/b\n")
    return root


def test_every_kind_of_entry_lands_in_the_catalogs(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    if os.geteuid() == 0:
        os.mknod(src / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    storage = tmp_path / "storage"
    report = publish_tree(src, storage, FQRN, keys)
    assert report.manifest.revision == 1
    repo = StoredRepository(storage, tmp_path)
    tree = repo.walk()

    expected = {}
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            expected["/" + os.path.relpath(full, src)] = os.lstat(full)
    expected[""] = os.lstat(src)
    expected["/dirtab/a/.cvmfscatalog"] = None  # materialised by the .cvmfsdirtab rule
    assert set(tree) == set(expected)

    for path, st in expected.items():
        entry = tree[path]
        if st is None:
            continue
        assert entry.mode == st.st_mode, path
        assert (entry.mtime, entry.mtimens) == divmod(st.st_mtime_ns, 10**9), path
        assert (entry.uid, entry.gid) == (st.st_uid, st.st_gid), path
        if stat.S_ISREG(st.st_mode):
            assert entry.is_regular and entry.size == st.st_size, path
            with open(os.path.join(src, path.lstrip("/")), "rb") as f:
                assert repo.content(path) == f.read(), path
        elif stat.S_ISLNK(st.st_mode):
            assert entry.flags == fmt.FLAG_FILE | fmt.FLAG_LINK
            assert entry.symlink == os.readlink(os.path.join(src, path.lstrip("/")))
            assert entry.size == len(entry.symlink)
        elif stat.S_ISDIR(st.st_mode):
            assert entry.is_directory and entry.size == 4096
            subdirs = [n for n in os.listdir(os.path.join(src, path.lstrip("/")))
                       if os.path.isdir(os.path.join(src, path.lstrip("/"), n))
                       and not os.path.islink(os.path.join(src, path.lstrip("/"), n))]
            assert entry.linkcount == 2 + len(subdirs), path
        else:
            assert entry.flags == fmt.FLAG_FILE | fmt.FLAG_SPECIAL, path
            assert entry.size == st.st_rdev

    assert tree["/varlink"].symlink == "$(CVMFS_ARCH)/lib"
    assert xattrs.decode(tree["/hello.txt"].xattr) == {b"user.color": b"blue"}
    assert tree["/empty"].hash.hex() == "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78"
    hello, link = tree["/hello.txt"], tree["/hello-link.txt"]
    assert hello.hardlink_group == link.hardlink_group > 0 and hello.linkcount == link.linkcount == 2
    assert tree["/empty"].hardlink_group == 0 and tree["/empty"].linkcount == 1
    big = tree["/big.bin"]
    assert big.is_chunked and big.hash is None and big.flags == fmt.FLAG_FILE | fmt.FLAG_CHUNKED
    chunks = repo.catalog_for("/big.bin").chunks(big)
    assert len(chunks) > 1 and chunks[0].offset == 0
    assert all(a.offset + a.size == b.offset for a, b in zip(chunks, chunks[1:]))
    assert chunks[-1].offset + chunks[-1].size == big.size
    repo.close()


def test_nested_catalogs_follow_markers_and_dirtab_with_correct_statistics(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys)
    repo = StoredRepository(storage, tmp_path)
    assert set(repo.catalogs) == {"", "/nested", "/dirtab/a"}
    root = repo.catalogs[""][0]
    assert root.lookup("/nested").flags == fmt.FLAG_DIR | fmt.FLAG_NESTED_MOUNTPOINT
    assert root.lookup("/dirtab/b").flags == fmt.FLAG_DIR  # excluded by '!'
    assert root.lookup("/dirtab/.hidden").flags == fmt.FLAG_DIR  # hidden directories never match
    nested = repo.catalogs["/nested"][0]
    assert nested.lookup("/nested").flags == fmt.FLAG_DIR | fmt.FLAG_NESTED_ROOT
    assert nested.root_prefix == "/nested" and root.root_prefix == ""
    assert nested.properties["schema"] == "2.5" and nested.properties["schema_revision"] == "7"
    assert root.properties["TTL"] == "240" and "TTL" not in nested.properties

    for prefix, (catalog, _) in repo.catalogs.items():
        stats = catalog.statistics()
        assert set(stats) == set(fmt.STATISTICS_COUNTERS)
        counted = dict.fromkeys(fmt.COUNTER_NAMES, 0)
        for entry, _, _ in catalog.all_entries():
            if stat.S_ISREG(entry.mode):
                counted["regular"] += 1
                counted["file_size"] += entry.size
            elif stat.S_ISDIR(entry.mode):
                counted["dir"] += 1
            elif stat.S_ISLNK(entry.mode):
                counted["symlink"] += 1
            else:
                counted["special"] += 1
            counted["xattr"] += entry.xattr is not None
            if entry.is_chunked:
                counted["chunked"] += 1
                counted["chunked_size"] += entry.size
        counted["chunks"] = len(catalog.all_chunk_rows())
        counted["nested"] = len(catalog.nested_catalogs())
        for name, value in counted.items():
            assert stats["self_" + name] == value, (prefix, name)
        subtree = dict.fromkeys(fmt.COUNTER_NAMES, 0)
        for ref in catalog.nested_catalogs():
            child = repo.catalogs[ref.path][0].statistics()
            for name in fmt.COUNTER_NAMES:
                subtree[name] += child["self_" + name] + child["subtree_" + name]
        for name, value in subtree.items():
            assert stats["subtree_" + name] == value, (prefix, name)
    repo.close()


def test_republish_is_incremental_and_revisions_increase(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    first = publish_tree(src, storage, FQRN, keys)
    (tmp_path / "r1").mkdir()
    repo1 = StoredRepository(storage, tmp_path / "r1")
    second = publish_tree(src, storage, FQRN, keys)
    assert second.manifest.revision == 2
    assert second.manifest.timestamp > first.manifest.timestamp
    assert second.stats.files_ingested == 0 and second.stats.objects_stored == 0
    assert second.stats.catalogs_reused == 2  # /nested and /dirtab/a, unchanged
    (tmp_path / "r2").mkdir()
    repo2 = StoredRepository(storage, tmp_path / "r2")
    assert repo2.catalogs["/nested"][1] == repo1.catalogs["/nested"][1]
    assert repo2.catalogs[""][1] != repo1.catalogs[""][1]
    assert repo2.catalogs[""][0].previous_revision == repo1.catalogs[""][1]

    write(src / "nested" / "inner" / "file", b"changed content\n")
    third = publish_tree(src, storage, FQRN, keys)
    assert third.stats.files_ingested == 1 and third.manifest.revision == 3
    (tmp_path / "r3").mkdir()
    repo3 = StoredRepository(storage, tmp_path / "r3")
    assert repo3.catalogs["/nested"][1] != repo2.catalogs["/nested"][1]
    assert repo3.catalogs["/dirtab/a"][1] == repo2.catalogs["/dirtab/a"][1]
    assert repo3.content("/nested/inner/file") == b"changed content\n"
    assert repo3.catalogs["/nested"][0].revision == 3 and repo3.catalogs["/dirtab/a"][0].revision == 1

    history = decompress((storage / read_manifest(storage).history.object_path(SUFFIX_HISTORY)).read_bytes())
    (tmp_path / "h.db").write_bytes(history)
    tags = read_tags(str(tmp_path / "h.db"))
    generic = [t for t in tags if t.name.startswith("generic-")]
    assert [t.revision for t in generic] == [3, 2, 1]
    assert {t.name: t.revision for t in tags if t.name.startswith("trunk")} == {"trunk": 3, "trunk-previous": 2}
    assert generic[0].hash == repo3.catalogs[""][1].hex()
    for repo in (repo1, repo2, repo3):
        repo.close()


def test_meta_info_is_stored_and_kept(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    meta = write(tmp_path / "meta.json", b'{"administrator": "Ada", "email": "ada@example.org"}')
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys, meta_info=str(meta))
    manifest = read_manifest(storage)
    assert decompress((storage / manifest.meta_info.object_path(SUFFIX_METAINFO)).read_bytes()) == \
        meta.read_bytes()
    publish_tree(src, storage, FQRN, keys)
    assert read_manifest(storage).meta_info == manifest.meta_info
    write(tmp_path / "bad.json", b"{not json")
    with pytest.raises(PublishError, match="not valid JSON"):
        publish_tree(src, storage, FQRN, keys, meta_info=str(tmp_path / "bad.json"))


@pytest.mark.parametrize("algorithm,compression", [(SHAKE128, NONE), (RMD160, 0)])
def test_other_hash_algorithms_and_no_compression_round_trip(tmp_path, keys, algorithm, compression):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys, algorithm=algorithm, compression=compression)
    manifest = read_manifest(storage)
    assert manifest.root_catalog.algorithm == algorithm
    suffix = {SHAKE128: "-shake128", RMD160: "-rmd160"}[algorithm]
    assert (storage / ".cvmfspublished").read_bytes().split(b"\n")[0].endswith(suffix.encode())
    repo = StoredRepository(storage, tmp_path)
    for path, entry in repo.walk().items():
        if entry.is_regular:
            assert entry.compression == compression and entry.hash_algorithm == algorithm
            source = src / path.lstrip("/")
            assert repo.content(path) == (source.read_bytes() if source.exists() else b"")
    if compression == NONE:
        hello = repo.entry("/hello.txt")
        assert (storage / hello.hash.object_path()).read_bytes() == b"hello world\n"
    repo.close()


def _manifest_and_whitelist(storage):
    return (storage / ".cvmfspublished").read_bytes(), (storage / ".cvmfswhitelist").read_bytes()


def test_bad_names_fail_clearly_and_keep_the_previous_revision(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys)
    before = _manifest_and_whitelist(storage)
    bad = os.fsencode(src / "dir") + b"/bad\xffname"
    with open(bad, "wb") as f:
        f.write(b"x")
    with pytest.raises(PublishError, match=r"bad\\xffname.*not valid UTF-8"):
        publish_tree(src, storage, FQRN, keys)
    assert _manifest_and_whitelist(storage) == before
    os.unlink(bad)
    write(src / "dir" / "line\nbreak", b"x")
    with pytest.raises(PublishError, match="line break"):
        publish_tree(src, storage, FQRN, keys)
    assert _manifest_and_whitelist(storage) == before
    assert [p.name for p in (storage / "data" / "txn").iterdir()] == ["publish.lock"]


def test_file_changing_while_published_fails(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys)
    before = _manifest_and_whitelist(storage)
    growing = src / "growing.log"
    write(growing, b"start\n" * 100_000)
    stop = threading.Event()

    def append():
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(b"more\n")
                f.flush()
                time.sleep(0.0005)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        with pytest.raises(PublishError, match="growing.log.*changed while"):
            publish_tree(src, storage, FQRN, keys)
    finally:
        stop.set()
        writer.join()
    assert _manifest_and_whitelist(storage) == before


def test_ingest_refuses_a_file_that_is_not_what_the_walk_saw(tmp_path):
    from cvmfs_pilot.publish.ingest import IngestSettings, ingest_file
    storage = Storage(tmp_path / "storage")
    storage.create_layout()
    f = write(tmp_path / "f", b"abc")
    st = os.stat(f)
    settings = IngestSettings(storage.root, 1, 0, SMALL_CHUNKS, tmp_path)
    with pytest.raises(PublishError, match="changed while"):
        ingest_file(settings, str(f), st.st_size + 1, st.st_mtime_ns)
    with pytest.raises(PublishError, match="changed while"):
        ingest_file(settings, str(f), st.st_size, st.st_mtime_ns + 1)
    assert ingest_file(settings, str(f), st.st_size, st.st_mtime_ns).hash is not None


def test_a_second_concurrent_publish_fails_clearly(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys)
    holder = Storage(storage)
    holder.lock()
    try:
        with pytest.raises(PublishError, match="another publish or resign .* is running"):
            publish_tree(src, storage, FQRN, keys)
    finally:
        holder.unlock()
    publish_tree(src, storage, FQRN, keys)
    assert read_manifest(storage).revision == 2


def test_storage_of_another_repository_or_unrelated_files_is_refused(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys)
    other_keys = make_keys(tmp_path / "other-keys", "other.example.org")
    with pytest.raises(PublishError, match="holds repository 'pub.example.org', not 'other.example.org'"):
        publish_tree(src, storage, "other.example.org", other_keys)
    unrelated = tmp_path / "home"
    write(unrelated / "thesis.tex", b"precious")
    with pytest.raises(PublishError, match="not empty and is not a repository"):
        publish_tree(src, unrelated, FQRN, keys)
    assert sorted(p.name for p in unrelated.iterdir()) == ["thesis.tex"]


def test_wrong_or_mismatched_keys_are_refused(tmp_path, keys):
    from cvmfs_pilot.publish.keys import KeySetError
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    with pytest.raises((KeySetError, PublishError), match="pub.example.org.key"):
        publish_tree(src, storage, FQRN, tmp_path / "nowhere")
    other = make_keys(tmp_path / "other", FQRN)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for suffix in ("masterkey", "pub", "crt"):
        (mixed / (FQRN + "." + suffix)).write_bytes((keys / (FQRN + "." + suffix)).read_bytes())
    (mixed / (FQRN + ".key")).write_bytes((other / (FQRN + ".key")).read_bytes())
    with pytest.raises(KeySetError, match="mismatched keys"):
        publish_tree(src, storage, FQRN, mixed)
    assert not (storage / ".cvmfspublished").exists()


def test_killed_publish_leaves_the_previous_revision_and_the_next_one_succeeds(tmp_path, keys):
    src = make_tree(tmp_path / "src")
    storage = tmp_path / "storage"
    publish_tree(src, storage, FQRN, keys)
    before = _manifest_and_whitelist(storage)
    for i in range(40):
        write(src / "many" / "f{:03d}".format(i), os.urandom(300_000))
    code = ("import sys; sys.path.insert(0, {tests!r})\n"
            "from support.repo import publish_tree\n"
            "publish_tree({src!r}, {storage!r}, {fqrn!r}, {keys!r}, workers=1)\n").format(
        tests=os.path.dirname(os.path.dirname(__file__)), src=str(src), storage=str(storage), fqrn=FQRN,
        keys=str(keys))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until it has begun writing objects of the new files
        txn = list((storage / "data" / "txn").iterdir())
        if len(txn) > 1:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, 9)
    proc.wait()
    assert _manifest_and_whitelist(storage) == before
    report = publish_tree(src, storage, FQRN, keys)
    assert report.manifest.revision == 2
    assert [p.name for p in (storage / "data" / "txn").iterdir()] == ["publish.lock"]


def test_full_disk_fails_clearly_and_keeps_the_previous_revision(tmp_path, keys):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; CI runs this test as root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        src = make_tree(tmp_path / "src")
        storage = mnt / "storage"
        publish_tree(src, storage, FQRN, keys)
        before = _manifest_and_whitelist(storage)
        write(src / "huge.bin", os.urandom(6 * 1024 * 1024))
        with pytest.raises(PublishError, match="file system is full"):
            publish_tree(src, storage, FQRN, keys)
        assert _manifest_and_whitelist(storage) == before
        assert [p.name for p in (storage / "data" / "txn").iterdir()] == ["publish.lock"]
        (src / "huge.bin").unlink()
        assert publish_tree(src, storage, FQRN, keys).manifest.revision == 2
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_unreadable_source_file_fails_naming_it(tmp_path, unprivileged):
    """Root reads every file, so the publish runs as an unprivileged user, in a scratch directory it owns."""
    work = unprivileged.scratch(tmp_path)
    src = make_tree(work / "src")
    secret = write(src / "dir" / "secret", b"no")
    make_keys(work / "keys", FQRN)
    unprivileged.own(work)
    os.chmod(secret, 0)
    storage = work / "storage"
    command = [sys.executable, "-m", "cvmfs_pilot", "repo", "publish", str(src), str(storage), "--name", FQRN,
               "--keys", str(work / "keys"), "--workers", "1"]
    result = unprivileged.run(command)
    assert result.returncode == 1
    assert "cannot read source file {}".format(secret) in result.stderr
    assert "Permission denied" in result.stderr and "check the permissions" in result.stderr
    assert not (storage / ".cvmfspublished").exists()
