"""repo check: a repository we publish passes, and every kind of damage or forgery is caught with a precise message.

One small repository (nested catalogs by .cvmfscatalog and .cvmfsdirtab, a chunked file, symlinks, hard links, an
empty file, a FIFO) is published once per module; each test damages its own copy. Catalog-level damage is made
with valid hashes all the way up (the edited catalog is stored under its new hash, its parents and the manifest are
updated and the manifest is re-signed), so that the structural checks themselves are what must catch it.
"""

import datetime
import os
import random
import sqlite3
import zlib
from pathlib import Path

import pytest

from cvmfs_pilot.cli import main as cli_main
from cvmfs_pilot.cvmfs.catalog import Catalog
from cvmfs_pilot.cvmfs.compression import COMPRESSION_BY_NAME, ZLIB
from cvmfs_pilot.cvmfs.hashing import SHA1, ContentHash
from cvmfs_pilot.cvmfs.signed import split_signed
from cvmfs_pilot.publish.check import check
from cvmfs_pilot.publish.chunking import ChunkSizes
from cvmfs_pilot.publish.errors import PublishError
from cvmfs_pilot.publish.keys import KeySet, sign_manifest, sign_whitelist
from cvmfs_pilot.publish.publisher import PublishOptions, publish
from cvmfs_pilot.publish.storage import MANIFEST, WHITELIST
from support.repo import read_manifest

FQRN = "check.example.org"
SMALL_CHUNKS = ChunkSizes(64, 128, 256)


# -- the repository under test ------------------------------------------------------------------------------------

def make_source(root):
    """A tree with every kind of entry the publisher writes."""
    rng = random.Random(7)
    (root / "nested" / "sub").mkdir(parents=True)
    (root / "nested" / ".cvmfscatalog").write_bytes(b"")
    (root / "nested" / "file").write_bytes(b"only in the nested catalog\n")
    (root / "nested" / "sub" / "deep").write_bytes(b"deep\n")
    (root / ".cvmfsdirtab").write_text("/software/*\n")
    for name in ("one", "two"):
        (root / "software" / name).mkdir(parents=True)
        (root / "software" / name / "version").write_text("{} 1.0\n".format(name))
    (root / "software" / "two" / "inner").mkdir()
    (root / "software" / "two" / "inner" / ".cvmfscatalog").write_bytes(b"")
    (root / "big").write_bytes(bytes(rng.getrandbits(8) for _ in range(6000)))
    (root / "empty").write_bytes(b"")
    (root / "four").write_bytes(b"abcd")
    (root / "link").symlink_to("big")
    (root / "dangling").symlink_to("no/such/target")
    (root / "hard").mkdir()
    (root / "hard" / "a").write_bytes(b"hard-linked content\n")
    os.link(root / "hard" / "a", root / "hard" / "b")
    os.mkfifo(root / "pipe")
    try:
        os.setxattr(root / "four", "user.colour", b"blue")
    except OSError:
        pass  # a file system without user xattrs: the rest of the tree still covers everything else


@pytest.fixture(scope="module")
def published(tmp_path_factory, keys_dir):
    base = tmp_path_factory.mktemp("published")
    make_source(base / "src")
    options = PublishOptions(algorithm=SHA1, compression=ZLIB, chunk_sizes=SMALL_CHUNKS, workers=2)
    publish(str(base / "src"), str(base / "storage"), FQRN, str(keys_dir), options)
    return base / "storage"


def pub(keys_dir):
    return [str(keys_dir / "{}.pub".format(FQRN))]


# -- reading and rewriting the repository -------------------------------------------------------------------------


def catalog_chain(storage, path, workdir):
    """``[(mount path, hash, size, decompressed file)]`` from the root catalog to the one holding ``path``."""
    manifest = read_manifest(storage)
    chain = []
    mount, content_hash, size = "", manifest.root_catalog, manifest.root_catalog_size
    while True:
        filename = workdir / "{}.db".format(content_hash.hex())
        filename.write_bytes(zlib.decompress((storage / content_hash.object_path("C")).read_bytes()))
        chain.append((mount, content_hash, size, filename))
        with Catalog(str(filename)) as catalog:
            ref = catalog.find_nested(path)
        if ref is None:
            return chain
        mount, content_hash, size = ref.path, ref.hash, ref.size


def lookup(storage, path, workdir):
    """The catalog entry at ``path`` and its chunks."""
    filename = catalog_chain(storage, path, workdir)[-1][3]
    with Catalog(str(filename)) as catalog:
        entry = catalog.lookup(path)
        return entry, catalog.chunks(entry) if entry.is_chunked else []


def store_catalog(storage, filename):
    data = Path(filename).read_bytes()
    stored = zlib.compress(data)
    content_hash = ContentHash.of(stored, SHA1)
    (storage / content_hash.object_path("C")).write_bytes(stored)
    return content_hash, len(data)


def resign_manifest(storage, keys_dir, **changes):
    """Rewrite manifest fields (Manifest attributes) and sign the result properly with ``keys_dir``'s key set."""
    manifest = read_manifest(storage)
    for name, value in changes.items():
        setattr(manifest, name, value)
    keys = KeySet.load(keys_dir, FQRN)
    (storage / MANIFEST).write_bytes(sign_manifest(manifest.body(), SHA1, keys.signing_key))


def edit_catalog(storage, keys_dir, path, workdir, *statements):
    """Run SQL ``statements`` on the catalog holding ``path``, then store it and every catalog above it under their
    new hashes and re-sign the manifest: the repository stays validly hashed and signed, with the edit in it."""
    chain = catalog_chain(storage, path, workdir)
    new_hash = new_size = child = None
    for mount, _, _, filename in reversed(chain):
        db = sqlite3.connect(str(filename))
        if new_hash is None:
            for statement in statements:
                db.execute(statement)
        else:
            db.execute("UPDATE nested_catalogs SET sha1=?, size=? WHERE path=?", (new_hash.hex(), new_size, child))
        db.commit()
        db.close()
        new_hash, new_size = store_catalog(storage, filename)
        child = mount
    resign_manifest(storage, keys_dir, root_catalog=new_hash, root_catalog_size=new_size)


def flip_byte(filename):
    data = bytearray(Path(filename).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(filename).write_bytes(bytes(data))


# -- a good repository passes ---------------------------------------------------------------------------------------

def test_published_repository_passes(repo, keys_dir):
    report = check(repo, FQRN, pub(keys_dir))
    assert report.revision == 1
    assert report.catalogs == 5  # root, /nested, /software/one, /software/two, /software/two/inner
    assert report.external_files == 0
    summary = report.summary()
    assert summary.startswith("{} revision 1 is intact: 5 catalogs".format(FQRN))
    assert "\n" not in summary


def test_check_counts_each_distinct_object_once(repo, keys_dir, tmp_path):
    entry, chunks = lookup(repo, "/big", tmp_path)
    assert entry.is_chunked and len(chunks) > 5
    report = check(repo, FQRN, pub(keys_dir))
    on_disk = [p for p in (repo / "data").rglob("*") if p.is_file() and p.parent.name != "txn"]
    assert report.objects == len(on_disk)  # a first revision references every object it stored


def test_cli_check_prints_summary_and_fails_with_message(repo, keys_dir, capsys):
    assert cli_main(["repo", "check", str(repo), "--name", FQRN, "--pubkey", pub(keys_dir)[0]]) == 0
    assert "is intact" in capsys.readouterr().out
    (repo / WHITELIST).unlink()
    assert cli_main(["repo", "check", str(repo), "--name", FQRN, "--pubkey", pub(keys_dir)[0]]) == 1
    assert ".cvmfswhitelist is missing" in capsys.readouterr().err


@pytest.mark.parametrize("hash_name, compression", [("shake128", "none"), ("rmd160", "zlib"), ("rmd160", "none")])
def test_round_trip_with_other_algorithms(tmp_path, keys_dir, hash_name, compression, capsys):
    make_source(tmp_path / "src")
    storage = tmp_path / "storage"
    assert cli_main(["repo", "publish", str(tmp_path / "src"), str(storage), "--name", FQRN, "--keys",
                     str(keys_dir), "--hash", hash_name, "--compression", compression, "--chunk-sizes", "64,128,256",
                     "--workers", "2"]) == 0
    assert read_manifest(storage).root_catalog.hex().endswith("-" + hash_name)
    entry, chunks = lookup(storage, "/big", tmp_path)
    assert chunks and chunks[0].hash.hex().endswith("-" + hash_name)
    assert entry.compression == COMPRESSION_BY_NAME[compression]
    report = check(storage, FQRN, pub(keys_dir))
    assert report.catalogs == 5


# -- damaged objects --------------------------------------------------------------------------------------------------

def test_flipped_byte_in_data_object(repo, keys_dir, tmp_path):
    entry, _ = lookup(repo, "/nested/file", tmp_path)
    flip_byte(repo / entry.hash.object_path())
    with pytest.raises(PublishError, match=r"content of /nested/file: object {} .* is corrupted: its \d+ stored "
                                           r"bytes hash to".format(entry.hash.object_path())):
        check(repo, FQRN, pub(keys_dir))


def test_flipped_byte_in_chunk_object(repo, keys_dir, tmp_path):
    _, chunks = lookup(repo, "/big", tmp_path)
    flip_byte(repo / chunks[2].hash.object_path("P"))
    with pytest.raises(PublishError, match=r"chunk 3 of /big \(offset {}, {} bytes\): object {} .* is corrupted"
                       .format(chunks[2].offset, chunks[2].size, chunks[2].hash.object_path("P"))):
        check(repo, FQRN, pub(keys_dir))


def test_truncated_catalog_object(repo, keys_dir, tmp_path):
    nested = repo / catalog_chain(repo, "/nested/file", tmp_path)[-1][1].object_path("C")
    data = nested.read_bytes()
    nested.write_bytes(data[:len(data) // 2])
    with pytest.raises(PublishError, match=r"nested catalog /nested \(data/.*C\): object .* is corrupted"):
        check(repo, FQRN, pub(keys_dir))


def test_deleted_object(repo, keys_dir, tmp_path):
    entry, _ = lookup(repo, "/hard/b", tmp_path)
    (repo / entry.hash.object_path()).unlink()
    with pytest.raises(PublishError, match=r"content of /hard/a: object {} is missing".format(
            entry.hash.object_path())):
        check(repo, FQRN, pub(keys_dir))


def test_deleted_certificate(repo, keys_dir):
    (repo / read_manifest(repo).certificate.object_path("X")).unlink()
    with pytest.raises(PublishError, match=r"certificate named by the manifest: object data/.*X is missing"):
        check(repo, FQRN, pub(keys_dir))


def test_deleted_history(repo, keys_dir):
    (repo / read_manifest(repo).history.object_path("H")).unlink()
    with pytest.raises(PublishError, match=r"history database named by the manifest: object data/.*H is missing"):
        check(repo, FQRN, pub(keys_dir))


def test_meta_info_must_be_json(repo, keys_dir):
    stored = zlib.compress(b"{not json")
    meta_info = ContentHash.of(stored, SHA1)
    (repo / meta_info.object_path("M")).write_bytes(stored)
    resign_manifest(repo, keys_dir, meta_info=meta_info)
    with pytest.raises(PublishError, match=r"meta-information object .*M is not JSON"):
        check(repo, FQRN, pub(keys_dir))


def test_object_that_expands_beyond_its_size(repo, keys_dir, tmp_path):
    entry, _ = lookup(repo, "/four", tmp_path)
    stored = zlib.compress(b"abcd" * 1000)
    impostor = ContentHash.of(stored, SHA1)
    (repo / impostor.object_path()).write_bytes(stored)
    edit_catalog(repo, keys_dir, "/four", tmp_path,
                 "UPDATE catalog SET hash=x'{}' WHERE name='four'".format(impostor.digest.hex()))
    with pytest.raises(PublishError, match=r"content of /four: object .* is damaged: it expands beyond the "
                                           r"expected 4 bytes"):
        check(repo, FQRN, pub(keys_dir))


# -- forged or stale signatures ---------------------------------------------------------------------------------------

def test_manifest_body_edited_without_resigning(repo, keys_dir):
    data = (repo / MANIFEST).read_bytes()
    (repo / MANIFEST).write_bytes(data.replace(b"\nS1\n", b"\nS2\n", 1))
    with pytest.raises(PublishError, match=r"manifest .* is damaged or was altered: its hash line"):
        check(repo, FQRN, pub(keys_dir))


@pytest.mark.parametrize("edit", [False, True])
def test_manifest_resigned_with_another_key(repo, keys_dir, other_keys_dir, edit):
    body = split_signed((repo / MANIFEST).read_bytes()).body
    if edit:
        body = body.replace(b"\nD240\n", b"\nD60\n")
    forger = KeySet.load(other_keys_dir, FQRN)
    (repo / MANIFEST).write_bytes(sign_manifest(body, SHA1, forger.signing_key))
    with pytest.raises(PublishError, match=r"manifest signature does not verify with certificate"):
        check(repo, FQRN, pub(keys_dir))


def test_whitelist_without_our_fingerprint(repo, keys_dir, other_keys_dir):
    ours, theirs = KeySet.load(keys_dir, FQRN), KeySet.load(other_keys_dir, FQRN)
    (repo / WHITELIST).write_bytes(sign_whitelist(FQRN, [theirs.fingerprint()], ours.master_key))
    with pytest.raises(PublishError, match=r"does not list the certificate that signs the manifest"):
        check(repo, FQRN, pub(keys_dir))


def test_expired_whitelist(repo, keys_dir):
    keys = KeySet.load(keys_dir, FQRN)
    long_ago = datetime.datetime(2020, 3, 1, 12, 0, 0)
    (repo / WHITELIST).write_bytes(sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key, days=30,
                                                  now=long_ago))
    with pytest.raises(PublishError, match=r"whitelist of {} expired on 2020-03-31 12:00:00 UTC.*re-sign it with "
                                           r"'cvmfs-pilot repo resign'".format(FQRN)):
        check(repo, FQRN, pub(keys_dir))


def test_wrong_master_public_key(repo, keys_dir, other_keys_dir):
    with pytest.raises(PublishError, match=r"whitelist signature does not verify with any of the 1 master"):
        check(repo, FQRN, pub(other_keys_dir))


def test_manifest_of_another_repository(repo, keys_dir):
    with pytest.raises(PublishError, match=r"is for repository '{}', not 'other.example.org'".format(FQRN)):
        check(repo, "other.example.org", pub(keys_dir))


def test_properly_signed_manifest_naming_another_repository(repo, keys_dir):
    resign_manifest(repo, keys_dir, fqrn="other.example.org")
    with pytest.raises(PublishError, match=r"is for repository 'other.example.org', not '{}'".format(FQRN)):
        check(repo, FQRN, pub(keys_dir))


def test_manifest_revision_must_match_root_catalog(repo, keys_dir):
    resign_manifest(repo, keys_dir, revision=2)
    with pytest.raises(PublishError, match=r"root catalog .* is revision 1, but the manifest says revision 2"):
        check(repo, FQRN, pub(keys_dir))


def test_manifest_root_catalog_size_must_match(repo, keys_dir):
    manifest = read_manifest(repo)
    resign_manifest(repo, keys_dir, root_catalog_size=manifest.root_catalog_size - 1)
    with pytest.raises(PublishError, match=r"root catalog .*: object .* is damaged: it expands beyond the expected"):
        check(repo, FQRN, pub(keys_dir))


# -- inconsistent catalogs (validly hashed and signed) ---------------------------------------------------------------

CATALOG_DAMAGE = {
    "statistics": ("/big", ["UPDATE statistics SET value = value + 1 WHERE counter = 'self_regular'"],
                   r"root catalog .*: statistics counter self_regular is \d+, but the catalog's rows give"),
    "subtree statistics": ("/big", ["UPDATE statistics SET value = value + 1 WHERE counter = 'subtree_dir'"],
                           r"statistics counter subtree_dir is \d+, but its nested catalogs add up to"),
    "md5path": ("/empty", ["UPDATE catalog SET md5path_1 = 1 WHERE name = 'empty'"],
                r"entry /empty: its md5path \(1, -?\d+\) is not the MD5 of its path"),
    "orphan": ("/empty", ["UPDATE catalog SET parent_1 = 5, parent_2 = 6 WHERE name = 'empty'"],
               r"entry named 'empty' .*: its parent md5path \(5, 6\) is not in this catalog"),
    "flags vs mode": ("/empty", ["UPDATE catalog SET flags = 1 WHERE name = 'empty'"],
                      r"entry /empty: flags 1 do not match mode 100644"),
    "symlink size": ("/link", ["UPDATE catalog SET size = 99 WHERE name = 'link'"],
                     r"entry /link: symlink size 99 is not the length of its target 'big'"),
    "chunk gap": ("/big", ["DELETE FROM chunks WHERE offset = (SELECT MIN(offset) FROM chunks WHERE offset > 0)"],
                  r"entry /big: its chunk at offset \d+ .* does not start where the previous chunk ends"),
    "chunks short": ("/big", ["DELETE FROM chunks WHERE offset = (SELECT MAX(offset) FROM chunks)"],
                     r"entry /big: its chunks cover \d+ bytes, but the file has 6000"),
    "no content hash": ("/empty", ["UPDATE catalog SET hash = NULL WHERE name = 'empty'"],
                        r"entry /empty: a regular file that is not chunked needs a content hash"),
    "xattr blob": ("/empty", ["UPDATE catalog SET xattr = x'0105' WHERE name = 'empty'"],
                   r"entry /empty: extended attribute blob is truncated"),
    "mountpoint flag": ("/big", ["UPDATE catalog SET flags = 1 WHERE name = 'nested'"],
                        r"nested catalog /nested has no mountpoint entry here"),
    "stray mountpoint": ("/big", ["UPDATE catalog SET flags = 3 WHERE name = 'hard'"],
                         r"directory /hard is marked as a nested catalog mountpoint .* but no nested catalog"),
    "root_prefix": ("/nested/file", ["UPDATE properties SET value = '/elsewhere' WHERE key = 'root_prefix'"],
                    r"nested catalog /nested .*: root_prefix is '/elsewhere', but the catalog is mounted at /nested"),
    "nested root flag": ("/nested/file", ["UPDATE catalog SET flags = 1 WHERE name = 'nested'"],
                         r"entry /nested: the root of a nested catalog must have flag 32"),
    "nested revision": ("/nested/file", ["UPDATE properties SET value = '9' WHERE key = 'revision'"],
                        r"nested catalog /nested .*: catalog revision 9 is newer than the manifest's revision 1"),
    "schema column": ("/nested/file", ["ALTER TABLE catalog DROP COLUMN mtimens"],
                      r"nested catalog /nested .*: column catalog.mtimens is missing, but schema revision 7"),
    "statistics row": ("/nested/file", ["DELETE FROM statistics WHERE counter = 'self_special'"],
                       r"statistics counters self_special are missing"),
    "schema version": ("/nested/file", ["UPDATE properties SET value = '2.6' WHERE key = 'schema'"],
                       r"nested catalog /nested .*: .*schema 2.6"),
    "stray chunk rows": ("/nested/file", ["INSERT INTO chunks VALUES (1, 2, 0, 10, x'{}')".format("00" * 20)],
                         r"the chunks table has rows for md5path \(1, 2\), which is not a chunked file"),
}


@pytest.mark.parametrize("damage", sorted(CATALOG_DAMAGE))
def test_inconsistent_catalog(repo, keys_dir, tmp_path, damage):
    path, statements, message = CATALOG_DAMAGE[damage]
    check(repo, FQRN, pub(keys_dir))  # intact before the edit
    edit_catalog(repo, keys_dir, path, tmp_path, *statements)
    with pytest.raises(PublishError, match=message):
        check(repo, FQRN, pub(keys_dir))


def test_wrong_file_size_in_catalog(repo, keys_dir, tmp_path):
    edit_catalog(repo, keys_dir, "/four", tmp_path,
                 "UPDATE catalog SET size = 5 WHERE name = 'four'",
                 "UPDATE statistics SET value = value + 1 WHERE counter = 'self_file_size'")
    with pytest.raises(PublishError, match=r"content of /four: object .* decompresses to 4 bytes instead of the "
                                           r"expected 5"):
        check(repo, FQRN, pub(keys_dir))


def test_external_files_are_skipped_and_counted(repo, keys_dir, tmp_path):
    entry, _ = lookup(repo, "/four", tmp_path)
    edit_catalog(repo, keys_dir, "/four", tmp_path,
                 "UPDATE catalog SET flags = flags | 128 WHERE name = 'four'",
                 "UPDATE statistics SET value = 1 WHERE counter = 'self_external'",
                 "UPDATE statistics SET value = 4 WHERE counter = 'self_external_file_size'")
    (repo / entry.hash.object_path()).unlink()  # external files are not in the repository's storage
    report = check(repo, FQRN, pub(keys_dir))
    assert report.external_files == 1
    assert "1 external files not verifiable here" in report.summary()
