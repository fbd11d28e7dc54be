"""A published repository served by Debian's nginx: every file comes back byte-identical, with the headers of a
Stratum server, and the signature chain verifies from what HTTP delivers."""

import os
import urllib.request
import zlib

from cvmfs_pilot.cvmfs.hashing import SUFFIX_CERTIFICATE, ContentHash
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import Certificate, load_public_keys, verify_manifest, verify_whitelist
from cvmfs_pilot.cvmfs.whitelist import Whitelist

from support.repo import make_keys, publish_tree

FQRN = "http.example.org"


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), response.headers


def test_repository_served_by_nginx_verifies_and_matches_the_storage(tmp_path, nginx):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "file").write_bytes(b"content\n" * 1000)
    (src / "big").write_bytes(os.urandom(64 * 1024))
    keys = make_keys(tmp_path / "keys", FQRN)
    root = tmp_path / "srv"
    storage = root / FQRN
    publish_tree(src, storage, FQRN, keys)
    base = nginx(root) + "/" + FQRN

    raw, headers = get(base + "/.cvmfspublished")
    assert raw == (storage / ".cvmfspublished").read_bytes()
    assert headers["Cache-Control"] == "max-age=61"
    manifest = Manifest.parse(raw, expected_fqrn=FQRN)
    stored_certificate, headers = get(base + "/" + manifest.certificate.object_path(SUFFIX_CERTIFICATE))
    assert headers["Cache-Control"] == "max-age=259200"
    assert ContentHash.of(stored_certificate) == manifest.certificate
    certificate = Certificate.from_pem(zlib.decompress(stored_certificate))
    verify_manifest(raw, certificate)
    whitelist_raw, _ = get(base + "/.cvmfswhitelist")
    verify_whitelist(whitelist_raw, load_public_keys((keys / (FQRN + ".pub")).read_bytes()))
    assert Whitelist.parse(whitelist_raw, expected_fqrn=FQRN).lists(certificate.fingerprint())

    objects = 0
    for dirpath, _, filenames in os.walk(storage / "data"):
        if dirpath.endswith("txn"):
            continue
        for name in filenames:
            relative = os.path.relpath(os.path.join(dirpath, name), storage)
            body, _ = get(base + "/" + relative)
            assert body == (storage / relative).read_bytes()
            stored_hash, _ = ContentHash.parse_with_suffix(relative[5:7] + relative[8:])
            assert ContentHash.of(body) == stored_hash, relative
            objects += 1
    assert objects >= 5  # two files (one chunked into several objects), catalog, certificate, history


def test_python_standard_library_publishes_checks_and_reads_back(tmp_path):
    """A real tree of a few thousand files: published, accepted by `repo check`, every file identical."""
    import sysconfig

    from cvmfs_pilot.publish.check import check
    from support.repo import StoredRepository

    stdlib = sysconfig.get_paths()["stdlib"]
    keys = make_keys(tmp_path / "keys", FQRN)
    storage = tmp_path / "storage"
    report = publish_tree(stdlib, storage, FQRN, keys)
    assert report.stats.files > 500
    check(str(storage), FQRN, [str(keys / (FQRN + ".pub"))])
    repo = StoredRepository(storage, tmp_path)
    compared = 0
    for dirpath, _, filenames in os.walk(stdlib):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            path = "/" + os.path.relpath(full, stdlib)
            with open(full, "rb") as f:
                assert repo.content(path) == f.read(), path
            compared += 1
    assert compared == report.stats.files
    repo.close()
