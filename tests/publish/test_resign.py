"""repo resign: the real test.cern.ch fixture (whitelist expired in 2016) becomes verifiable again, and resign
refuses whatever its key set cannot vouch for."""

import datetime
import shutil
import stat
import tarfile
import zlib
from pathlib import Path

import pytest

from cvmfs_pilot.cli import main as cli_main
from cvmfs_pilot.cvmfs.catalog import Catalog
from cvmfs_pilot.cvmfs.compression import ZLIB
from cvmfs_pilot.cvmfs.hashing import SHA1, SHAKE128
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import Certificate, load_public_keys, verify_manifest, verify_whitelist
from cvmfs_pilot.cvmfs.signed import split_signed
from cvmfs_pilot.cvmfs.whitelist import Whitelist
from cvmfs_pilot.publish.check import check
from cvmfs_pilot.publish.errors import PublishError
from cvmfs_pilot.publish.keys import KeySet, sign_whitelist
from cvmfs_pilot.publish.publisher import PublishOptions, publish
from cvmfs_pilot.publish.resign import resign
from cvmfs_pilot.publish.storage import MANIFEST, WHITELIST, Storage

FIXTURE = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "test.cern.ch"
FIXTURE_FQRN = "test.cern.ch"
FIXTURE_PUB = [str(FIXTURE / "test.cern.ch.pub")]
FQRN = "resign.example.org"


@pytest.fixture
def fixture_repo(tmp_path):
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.12 warns without a filter
    with tarfile.open(FIXTURE / "repository.tar.gz") as tar:
        tar.extractall(tmp_path, **safe)
    return tmp_path / "cvmfs" / FIXTURE_FQRN


# -- the real repository ----------------------------------------------------------------------------------------------

def test_fixture_check_fails_before_resign(fixture_repo):
    with pytest.raises(PublishError, match=r"whitelist of test.cern.ch expired on 2016-02-12 16:04:13 UTC, so "
                                           r"clients refuse the repository; .* 'cvmfs-pilot repo resign'"):
        check(fixture_repo, FIXTURE_FQRN, FIXTURE_PUB)


def test_fixture_resign_then_check_passes(fixture_repo):
    manifest_before = (fixture_repo / MANIFEST).read_bytes()
    whitelist_before = Whitelist.parse((fixture_repo / WHITELIST).read_bytes())

    summary = resign(fixture_repo, FIXTURE, 30)

    assert summary.startswith("re-signed test.cern.ch revision 3: whitelist valid until ")
    manifest_after = (fixture_repo / MANIFEST).read_bytes()
    assert split_signed(manifest_after).body == split_signed(manifest_before).body
    whitelist_bytes = (fixture_repo / WHITELIST).read_bytes()
    whitelist = Whitelist.parse(whitelist_bytes, expected_fqrn=FIXTURE_FQRN)
    assert whitelist.fingerprints == whitelist_before.fingerprints
    assert not whitelist.is_expired()
    assert whitelist.expires - whitelist.created == datetime.timedelta(days=30)
    # verification as a client does it, with the node-tier code only
    master_keys = load_public_keys((FIXTURE / "test.cern.ch.pub").read_bytes())
    verify_whitelist(whitelist_bytes, master_keys)
    certificate = Certificate.from_pem((FIXTURE / "test.cern.ch.crt").read_bytes())
    verify_manifest(manifest_after, certificate)
    assert whitelist.lists(certificate.fingerprint())

    report = check(fixture_repo, FIXTURE_FQRN, FIXTURE_PUB)
    assert (report.revision, report.catalogs, report.entries) == (3, 6, 30)
    assert report.content_bytes > 20971520  # the chunked 20 MiB file was decompressed


def test_fixture_resign_via_cli(fixture_repo, capsys):
    assert cli_main(["repo", "resign", str(fixture_repo), "--keys", str(FIXTURE), "--whitelist-days", "3"]) == 0
    assert capsys.readouterr().out.startswith("re-signed test.cern.ch revision 3")
    whitelist = Whitelist.parse((fixture_repo / WHITELIST).read_bytes())
    assert whitelist.expires - whitelist.created == datetime.timedelta(days=3)
    assert cli_main(["repo", "check", str(fixture_repo), "--name", FIXTURE_FQRN, "--pubkey", FIXTURE_PUB[0]]) == 0


def listing_lines(storage, workdir):
    """Every path below the root with kind, size, permission bits and flags, as the catalogs say; a mountpoint is
    listed once, as its parent catalog's entry."""
    manifest = Manifest.parse((storage / MANIFEST).read_bytes())

    def open_catalog(content_hash):
        filename = workdir / (content_hash.hex() + ".db")
        filename.write_bytes(zlib.decompress((storage / content_hash.object_path("C")).read_bytes()))
        return Catalog(str(filename))

    lines = []

    def walk(catalog, directory):
        nested = {ref.path: ref for ref in catalog.nested_catalogs()}
        for entry in catalog.listing(directory):
            kind = "d" if entry.is_directory else "l" if entry.is_symlink else "f"
            lines.append("{:<60} {} {:>10} 0o{:o}  flags={}".format(entry.path, kind, entry.size,
                                                                     stat.S_IMODE(entry.mode), entry.flags))
            if entry.is_directory:
                if entry.path in nested:
                    with open_catalog(nested[entry.path].hash) as child:
                        walk(child, entry.path)
                else:
                    walk(catalog, entry.path)

    with open_catalog(manifest.root_catalog) as root:
        walk(root, "")
    return sorted(lines)


def test_fixture_listing_matches_catalogs(fixture_repo, tmp_path):
    expected = (FIXTURE / "expected-listing.txt").read_text().splitlines()
    assert listing_lines(fixture_repo, tmp_path) == expected


# -- our own repositories ---------------------------------------------------------------------------------------------

def publish_tree(base, keys_dir, algorithm=SHA1):
    (base / "src" / "dir").mkdir(parents=True)
    (base / "src" / "dir" / "file").write_text("content\n")
    (base / "src" / "dir" / ".cvmfscatalog").write_bytes(b"")
    options = PublishOptions(algorithm=algorithm, compression=ZLIB, chunk_sizes=None, workers=1)
    publish(str(base / "src"), str(base / "storage"), FQRN, str(keys_dir), options)
    return base / "storage"


@pytest.fixture(scope="module")
def published(tmp_path_factory, keys_dir):
    return publish_tree(tmp_path_factory.mktemp("published"), keys_dir)


def pub(keys_dir):
    return [str(keys_dir / "{}.pub".format(FQRN))]


def test_resign_adds_missing_fingerprint_and_keeps_the_others(repo, keys_dir, other_keys_dir):
    ours, theirs = KeySet.load(keys_dir, FQRN), KeySet.load(other_keys_dir, FQRN)
    (repo / WHITELIST).write_bytes(sign_whitelist(FQRN, [theirs.fingerprint()], ours.master_key))
    with pytest.raises(PublishError, match="does not list the certificate"):
        check(repo, FQRN, pub(keys_dir))
    resign(repo, keys_dir, 30)
    whitelist = Whitelist.parse((repo / WHITELIST).read_bytes())
    assert whitelist.fingerprints == [theirs.fingerprint(), ours.fingerprint()]
    check(repo, FQRN, pub(keys_dir))


def test_resign_creates_a_missing_whitelist(repo, keys_dir):
    (repo / WHITELIST).unlink()
    resign(repo, keys_dir, 30)
    whitelist = Whitelist.parse((repo / WHITELIST).read_bytes(), expected_fqrn=FQRN)
    assert whitelist.fingerprints == [KeySet.load(keys_dir, FQRN).fingerprint()]
    check(repo, FQRN, pub(keys_dir))


def test_resign_uses_the_repository_hash_algorithm(tmp_path, keys_dir):
    storage = publish_tree(tmp_path, keys_dir, algorithm=SHAKE128)
    resign(storage, keys_dir, 30)
    for name in (MANIFEST, WHITELIST):
        assert split_signed((storage / name).read_bytes()).hash_text.endswith("-shake128")
    whitelist = Whitelist.parse((storage / WHITELIST).read_bytes())
    assert whitelist.fingerprints == [KeySet.load(keys_dir, FQRN).fingerprint(SHAKE128)]  # not listed twice
    check(storage, FQRN, pub(keys_dir))


def test_resign_needs_the_master_key(repo, keys_dir, tmp_path):
    signing_only = tmp_path / "signing-only"
    signing_only.mkdir()
    for suffix in ("pub", "key", "crt"):
        shutil.copy(keys_dir / "{}.{}".format(FQRN, suffix), signing_only)
    with pytest.raises(PublishError, match=r"needs its master key {}.masterkey, which is not in".format(FQRN)):
        resign(repo, signing_only, 30)


def test_resign_refuses_a_key_set_whose_certificate_the_manifest_does_not_name(repo, other_keys_dir):
    before = (repo / MANIFEST).read_bytes(), (repo / WHITELIST).read_bytes()
    with pytest.raises(PublishError, match=r"is another certificate: a manifest signed with {}.key would not "
                                           r"verify with the certificate it names".format(FQRN)):
        resign(repo, other_keys_dir, 30)
    assert ((repo / MANIFEST).read_bytes(), (repo / WHITELIST).read_bytes()) == before


def test_resign_refuses_an_altered_manifest(repo, keys_dir):
    data = (repo / MANIFEST).read_bytes()
    (repo / MANIFEST).write_bytes(data.replace(b"\nD240\n", b"\nD60\n", 1))
    with pytest.raises(PublishError, match=r"does not verify with {}.crt .* altered or damaged".format(FQRN)):
        resign(repo, keys_dir, 30)


def test_resign_refuses_a_whitelist_of_another_master_key(repo, keys_dir, other_keys_dir):
    theirs = KeySet.load(other_keys_dir, FQRN)
    (repo / WHITELIST).write_bytes(sign_whitelist(FQRN, [theirs.fingerprint()], theirs.master_key))
    with pytest.raises(PublishError, match=r"whitelist signature does not verify.*Resign keeps the fingerprints "
                                           r"of a whitelist only if {}.pub verifies it".format(FQRN)):
        resign(repo, keys_dir, 30)


def test_resign_waits_for_a_running_publish(repo, keys_dir):
    holder = Storage(repo)
    holder.lock()
    try:
        with pytest.raises(PublishError, match="another publish or resign"):
            resign(repo, keys_dir, 30)
    finally:
        holder.unlock()
    resign(repo, keys_dir, 30)


def test_resign_of_a_directory_that_is_no_repository(tmp_path, keys_dir):
    with pytest.raises(PublishError, match=r"has no .cvmfspublished: it is not the top directory of a repository"):
        resign(tmp_path, keys_dir, 30)

