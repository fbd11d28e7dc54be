"""The client reading real repositories over HTTP: the fixture written by the real cvmfs_server and our own, through
nginx and squid; every kind of tampering is refused; rollback, offline operation and reload."""

import errno
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from cvmfs_pilot.client.repository import RepositoryError
from cvmfs_pilot.cvmfs.hashing import SUFFIX_CATALOG, SUFFIX_CERTIFICATE

from support.client_env import open_with, publish_and_serve, unpack_fixture, write_config
from support.repo import make_keys, publish_tree, read_manifest

FQRN = "client.example.org"


def _tree(root):
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "file.txt").write_bytes(b"deep content\n")
    (root / "big.bin").write_bytes(os.urandom(200_000))  # chunked with the small test chunk sizes
    (root / "empty").write_bytes(b"")
    os.symlink("$(CVMFS_TEST_ARCH:-generic)/lib", root / "varlink")
    os.symlink("dir/sub/file.txt", root / "rel")
    os.link(root / "empty", root / "empty-link")
    os.setxattr(root / "dir" / "sub" / "file.txt", "user.origin", b"test")
    (root / "nested").mkdir()
    (root / "nested" / ".cvmfscatalog").write_bytes(b"")
    (root / "nested" / "n.txt").write_bytes(b"nested\n")
    return root


@pytest.fixture
def served(tmp_path, nginx):
    """Our repository published into <tmp>/srv/<fqrn>, served by nginx, and a client configuration for it."""
    src = _tree(tmp_path / "src")
    served = publish_and_serve(src, FQRN, tmp_path, nginx, tmp_path / "etc", tmp_path / "cache", ttl=1)
    return dict(served, src=src, tmp=tmp_path)


def _compare_with_source(repository, src):
    count = 0
    for dirpath, dirnames, filenames in os.walk(str(src)):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            path = "/" + os.path.relpath(full, str(src))
            st, expected = repository.stat(path), os.lstat(full)
            assert stat.S_IFMT(st.st_mode) == stat.S_IFMT(expected.st_mode), path
            assert st.st_mode == expected.st_mode and st.st_mtime_ns == expected.st_mtime_ns, path
            if stat.S_ISREG(expected.st_mode):
                assert st.st_size == expected.st_size
                with open(full, "rb") as f:
                    assert repository.read(path) == f.read(), path
            count += 1
    return count


def test_reads_our_repository_through_nginx(served):
    with open_with(served["config"], FQRN) as repository:
        assert repository.manifest.revision == 1
        assert _compare_with_source(repository, served["src"]) > 8
        assert [name for name, _ in repository.listdir("/")] == sorted(os.listdir(str(served["src"])))
        assert repository.readlink("/varlink") == "generic/lib"
        hard1, hard2 = repository.stat("/empty"), repository.stat("/empty-link")
        assert hard1.st_ino == hard2.st_ino and hard1.st_nlink == 2
        assert repository.stat("/").st_ino == 1
        assert repository.stat("/dir").st_uid == os.getuid()
        xattrs = repository.xattrs("/dir/sub/file.txt")
        assert xattrs["user.origin"] == b"test" and xattrs["user.fqrn"] == FQRN.encode()
        assert xattrs["user.revision"] == b"1" and xattrs["user.host"].startswith(b"http://127.0.0.1")
        assert int(repository.xattrs("/big.bin")["user.chunks"]) > 1
        data = (served["src"] / "big.bin").read_bytes()
        for offset, size in ((0, 1), (4095, 2), (8191, 20000), (199_990, 100), (250_000, 10)):
            assert repository.read("/big.bin", offset, size) == data[offset:offset + size]
        with pytest.raises(RepositoryError) as missing:
            repository.stat("/nope")
        assert missing.value.errno == errno.ENOENT
        with pytest.raises(RepositoryError) as notdir:
            repository.listdir("/empty")
        assert notdir.value.errno == errno.ENOTDIR


def test_raw_symlinks_and_environment_expansion(served):
    from cvmfs_pilot.client.session import open_repository
    with open_repository(FQRN, str(served["config"]), {}, environ={"CVMFS_TEST_ARCH": "x86_64"}) as repository:
        assert repository.readlink("/varlink") == "x86_64/lib"
    with open_with(served["config"], FQRN, CVMFS_RAW_SYMLINKS="yes") as repository:
        assert repository.readlink("/varlink") == "$(CVMFS_TEST_ARCH:-generic)/lib"


def test_reads_through_squid(served, squid):
    proxy = squid()
    config = write_config(served["tmp"] / "etc-squid", FQRN, served["base"] + "/@fqrn@",
                          served["keys"] / (FQRN + ".pub"), served["tmp"] / "cache-squid", proxy=proxy)
    with open_with(config, FQRN) as repository:
        assert repository.objects.downloader.current_proxy == proxy
        assert _compare_with_source(repository, served["src"]) > 8


def test_the_real_fixture_reads_as_its_expected_listing(tmp_path, nginx, shared_dir):
    storage = unpack_fixture(shared_dir, tmp_path)
    base = nginx(storage.parent)
    config = write_config(tmp_path / "etc", "test.cern.ch", base + "/@fqrn@",
                          shared_dir / "fixtures" / "test.cern.ch" / "test.cern.ch.pub", tmp_path / "cache")
    expected = (shared_dir / "fixtures" / "test.cern.ch" / "expected-listing.txt").read_text().splitlines()
    with open_with(config, "test.cern.ch") as repository:
        assert repository.manifest.revision == 3
        lines = []
        stack = ["/"]
        while stack:
            path = stack.pop()
            for name, st in repository.listdir(path):
                child = path.rstrip("/") + "/" + name
                entry, _ = repository.entry(child)
                kind = "d" if entry.is_directory else "l" if entry.is_symlink else "f"
                lines.append("{:<60} {} {:>10} 0o{:o}  flags={}".format(child, kind, st.st_size,
                                                                        stat.S_IMODE(st.st_mode), entry.flags))
                if entry.is_directory:
                    stack.append(child)
        assert sorted(lines) == sorted(expected)
        assert repository.read("/bar/1/foo") and len(repository.read("/bar/big")) == 20971520
        big = repository.read("/bar/big", 16777210, 12)
        assert len(big) == 12  # across the chunk boundary


def _flip(path, offset=-5):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _expect_refused(served, match, code=errno.EACCES):
    with pytest.raises(RepositoryError, match=match) as refused:
        open_with(served["config"], FQRN)
    assert refused.value.errno == code


def test_tampered_manifest_is_refused(served):
    manifest = served["storage"] / ".cvmfspublished"
    original = manifest.read_bytes()
    manifest.write_bytes(original.replace(b"\nD1\n", b"\nD9\n"))
    _expect_refused(served, "manifest")
    manifest.write_bytes(original[:-3] + bytes(b ^ 0xFF for b in original[-3:]))
    _expect_refused(served, "signature")


def test_tampered_certificate_whitelist_and_catalog_are_refused(served):
    manifest = read_manifest(served["storage"])
    certificate = served["storage"] / manifest.certificate.object_path(SUFFIX_CERTIFICATE)
    good = certificate.read_bytes()
    _flip(certificate)
    with pytest.raises(OSError) as corrupt:
        open_with(served["config"], FQRN)
    assert corrupt.value.errno == errno.EIO and "hash mismatch" in str(corrupt.value)
    certificate.write_bytes(good)
    whitelist = served["storage"] / ".cvmfswhitelist"
    good_whitelist = whitelist.read_bytes()
    whitelist.write_bytes(good_whitelist.replace(b"\nN", b"\nNx", 1))
    _expect_refused(served, "whitelist")
    whitelist.write_bytes(good_whitelist)
    catalog = served["storage"] / manifest.root_catalog.object_path(SUFFIX_CATALOG)
    _flip(catalog)
    with pytest.raises(OSError) as corrupt:
        open_with(served["config"], FQRN)
    assert corrupt.value.errno == errno.EIO and "hash mismatch" in str(corrupt.value)


def test_corrupted_data_object_is_never_served(served):
    with open_with(served["config"], FQRN) as repository:
        entry, _ = repository.entry("/dir/sub/file.txt")
        _flip(served["storage"] / entry.hash.object_path())
        with pytest.raises(OSError) as error:
            repository.read("/dir/sub/file.txt")
        assert error.value.errno == errno.EIO and "hash mismatch" in str(error.value)


def test_expired_whitelist_and_wrong_master_key(served, tmp_path):
    from cvmfs_pilot.publish.keys import KeySet, sign_whitelist
    import datetime
    keys = KeySet.load(served["keys"], FQRN)
    old = datetime.datetime.utcnow() - datetime.timedelta(days=40)
    (served["storage"] / ".cvmfswhitelist").write_bytes(
        sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key, days=30, now=old))
    _expect_refused(served, "expired on")
    other = make_keys(tmp_path / "other", FQRN)
    (served["storage"] / ".cvmfswhitelist").write_bytes(
        sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key, days=30))
    shutil.copy(str(other / (FQRN + ".pub")), str(served["config"] / "keys" / (FQRN + ".pub")))
    _expect_refused(served, "whitelist")


def test_rollback_to_an_older_revision_is_refused(served):
    old = served["tmp"] / "old"
    shutil.copytree(str(served["storage"]), str(old))
    (served["src"] / "new.txt").write_bytes(b"new\n")
    publish_tree(served["src"], served["storage"], FQRN, served["keys"], ttl=1)
    with open_with(served["config"], FQRN) as repository:
        assert repository.manifest.revision == 2
    for name in (".cvmfspublished", ".cvmfswhitelist"):
        shutil.copy(str(old / name), str(served["storage"] / name))
    _expect_refused(served, "rollback")


def test_offline_operation_from_the_cache(served):
    with open_with(served["config"], FQRN) as repository:
        assert repository.read("/dir/sub/file.txt") == b"deep content\n"
    offline = dict(CVMFS_SERVER_URL="http://127.0.0.1:9/@fqrn@")  # discard port: nothing answers
    with open_with(served["config"], FQRN, **offline) as repository:
        assert repository.loader.offline and repository.manifest.revision == 1
        assert repository.read("/dir/sub/file.txt") == b"deep content\n"
        with pytest.raises(OSError) as error:
            repository.read("/nested/n.txt")  # its nested catalog was never fetched
        assert error.value.errno == errno.EIO


def test_reload_after_ttl_keeps_open_files(served):
    with open_with(served["config"], FQRN) as repository:
        old_file = repository.open_file("/dir/sub/file.txt")
        (served["src"] / "dir" / "sub" / "file.txt").write_bytes(b"second revision\n")
        publish_tree(served["src"], served["storage"], FQRN, served["keys"], ttl=1)
        assert not repository.reload_if_due() or repository.manifest.revision == 2
        time.sleep(1.1)
        assert repository.reload_if_due()
        assert repository.manifest.revision == 2
        assert repository.read("/dir/sub/file.txt") == b"second revision\n"
        assert old_file.read(0, 100) == b"deep content\n"
        old_file.close()


def test_concurrent_readers_in_several_processes_share_one_cache(served):
    code = ("import sys; sys.path.insert(0, {tests!r})\n"
            "from support.client_env import open_with\n"
            "with open_with({config!r}, {fqrn!r}) as r:\n"
            "    for _ in range(3):\n"
            "        assert r.read('/big.bin') == open({big!r}, 'rb').read()\n"
            "        assert r.read('/dir/sub/file.txt') == b'deep content\\n'\n").format(
        tests=os.path.dirname(os.path.dirname(__file__)), config=str(served["config"]), fqrn=FQRN,
        big=str(served["src"] / "big.bin"))
    processes = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(6)]
    assert [p.wait(timeout=120) for p in processes] == [0] * 6


def test_quota_keeps_the_cache_small(served):
    (served["src"] / "many").mkdir()
    for i in range(30):
        (served["src"] / "many" / "f{}".format(i)).write_bytes(os.urandom(100_000))
    publish_tree(served["src"], served["storage"], FQRN, served["keys"])
    with open_with(served["config"], FQRN, CVMFS_QUOTA_LIMIT="1") as repository:
        for i in range(30):
            assert len(repository.read("/many/f{}".format(i))) == 100_000
        used, _, _ = repository.objects.cache.usage()
        assert used <= 1024 * 1024


def test_missing_server_url_is_a_clear_error(tmp_path, served):
    (served["config"] / "config.d" / (FQRN + ".conf")).write_text("# nothing\n")
    _expect_refused(served, "CVMFS_SERVER_URL is not set", errno.EINVAL)


def test_config_repository_is_read_first(tmp_path, nginx):
    cfg, target = "config.example.org", "target.example.org"
    srv = tmp_path / "srv"
    cfg_keys = make_keys(tmp_path / "cfg-keys", cfg)
    keys = make_keys(tmp_path / "keys", target)
    src = _tree(tmp_path / "src")
    publish_tree(src, srv / target, target, keys)
    cfg_src = tmp_path / "cfg-src" / "etc" / "cvmfs" / "config.d"
    cfg_src.mkdir(parents=True)
    base = nginx(srv)
    (cfg_src / (target + ".conf")).write_text('CVMFS_SERVER_URL="{}/@fqrn@"\n'.format(base))
    (cfg_src.parent / "keys").mkdir()
    publish_tree(tmp_path / "cfg-src", srv / cfg, cfg, cfg_keys)
    etc = write_config(tmp_path / "etc", cfg, base + "/@fqrn@", cfg_keys / (cfg + ".pub"), tmp_path / "cache",
                       extra={"CVMFS_CONFIG_REPOSITORY": cfg})
    shutil.copy(str(keys / (target + ".pub")), str(etc / "keys" / (target + ".pub")))
    with open_with(etc, target) as repository:
        assert repository.config_repository == cfg
        assert repository.config.origin("CVMFS_SERVER_URL") == \
            "/cvmfs/{}/etc/cvmfs/config.d/{}.conf:1".format(cfg, target)
        assert repository.read("/dir/sub/file.txt") == b"deep content\n"


def test_fs_commands(served, tmp_path):
    def fs(*args):
        return subprocess.run([sys.executable, "-m", "cvmfs_pilot", "fs"] + list(args) +
                              ["--config-dir", str(served["config"])], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    info = fs("info", FQRN)
    assert info.returncode == 0 and "revision:          1" in info.stdout and "DIRECT" in info.stdout
    listing = fs("ls", FQRN, "/dir")
    assert listing.returncode == 0 and listing.stdout.rstrip().endswith(" sub")
    cat = fs("cat", FQRN, "/dir/sub/file.txt")
    assert cat.stdout == "deep content\n"
    missing = fs("stat", FQRN, "/nope")
    assert missing.returncode == 1 and "no such file" in missing.stderr
    out = tmp_path / "export"
    got = fs("get", FQRN, "/", "--to", str(out))
    assert got.returncode == 0, got.stderr
    for dirpath, _, filenames in os.walk(str(served["src"])):
        for name in filenames:
            source = os.path.join(dirpath, name)
            exported = os.path.join(str(out), os.path.relpath(source, str(served["src"])))
            if os.path.islink(source):
                assert os.readlink(exported) in (os.readlink(source), "generic/lib")
            else:
                assert open(exported, "rb").read() == open(source, "rb").read()
                assert os.stat(exported).st_mtime_ns == os.stat(source).st_mtime_ns


def test_blacklisted_certificate_and_revision_floor_are_refused(served):
    from cvmfs_pilot.publish.keys import KeySet
    from cvmfs_pilot.cvmfs.whitelist import format_fingerprint
    fingerprint = format_fingerprint(KeySet.load(served["keys"], FQRN).fingerprint())
    blacklist = served["config"] / "blacklist"
    blacklist.write_text("# revoked\n{}\n".format(fingerprint))
    _expect_refused(served, "blacklisted")
    blacklist.write_text("<{} 5\n".format(FQRN))
    _expect_refused(served, "below the blacklisted floor 5")
    blacklist.write_text("<{} 1\n".format(FQRN))
    with open_with(served["config"], FQRN) as repository:
        assert repository.manifest.revision == 1


def test_corrupted_cache_object_is_detected_and_fetched_again(served):
    with open_with(served["config"], FQRN) as repository:
        entry, _ = repository.entry("/dir/sub/file.txt")
        assert repository.read("/dir/sub/file.txt") == b"deep content\n"
        cached = repository.objects.cache.path_of(entry.hash)
    with open(cached, "r+b") as f:
        f.write(b"X")
    with open_with(served["config"], FQRN) as repository:
        assert repository.read("/dir/sub/file.txt") == b"deep content\n"


def test_concurrent_reads_of_one_open_file_never_mix_up_its_chunks(served):
    """Many threads read one chunked open file at once (as FUSE workers do), so its small set of open chunk files
    keeps being evicted: a chunk closed while another read was about to pread it would let that read see the
    bytes of whichever chunk reused the descriptor. Every read must return exactly the source's bytes."""
    import random
    import threading

    expected = (served["src"] / "big.bin").read_bytes()
    with open_with(served["config"], FQRN) as repository:
        opened = repository.open_file("/big.bin")
        assert len(opened._chunks) > 8  # more chunks than it keeps open
        wrong = []

        def reader(seed):
            generator = random.Random(seed)
            for _ in range(150):
                offset = generator.randrange(len(expected))
                size = generator.randrange(1, 40_000)
                if opened.read(offset, size) != expected[offset:offset + size]:
                    wrong.append((offset, size))

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        opened.close()
    assert wrong == []
