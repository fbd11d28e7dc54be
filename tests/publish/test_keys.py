"""Key sets (cvmfs_pilot.publish.keys): generation, loading, and signatures that the pure-Python verifier, OpenSSL
and the real test.cern.ch files agree with."""

import datetime
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from cvmfs_pilot.cvmfs.hashing import RMD160, SHA1, SHAKE128, ContentHash
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import (
    Certificate,
    SignatureError,
    load_public_keys,
    verify_manifest,
    verify_whitelist,
)
from cvmfs_pilot.cvmfs.signed import split_signed
from cvmfs_pilot.cvmfs.whitelist import Whitelist
from cvmfs_pilot.publish.keys import (
    KeySet,
    KeySetError,
    generate_keys,
    key_paths,
    resign_whitelist,
    sign_manifest,
    sign_whitelist,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = PROJECT_ROOT / ".." / "shared" / "fixtures" / "test.cern.ch"
FIXTURE_FQRN = "test.cern.ch"
FQRN = "example.cern.ch"
ALGORITHMS = [SHA1, RMD160, SHAKE128]
ALGORITHM_IDS = ["sha1", "rmd160", "shake128"]
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


@pytest.fixture(scope="module")
def keys(keys_dir):
    return KeySet.load(keys_dir, FQRN)


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    """The real ``.cvmfspublished`` and ``.cvmfswhitelist`` of test.cern.ch."""
    target = tmp_path_factory.mktemp("test.cern.ch")
    with tarfile.open(FIXTURE / "repository.tar.gz") as tar:
        options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(target, **options)
    repository = target / "cvmfs" / FIXTURE_FQRN
    return (repository / ".cvmfspublished").read_bytes(), (repository / ".cvmfswhitelist").read_bytes()


def copy_key_set(source, target, suffixes=("masterkey", "pub", "key", "crt")):
    for suffix in suffixes:
        shutil.copy(key_paths(source, FQRN)[suffix], key_paths(target, FQRN)[suffix])
    return target


def openssl(*args):
    return subprocess.run(["openssl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)


def manifest_body(algorithm):
    return Manifest(root_catalog=ContentHash.of(b"catalog", algorithm), root_catalog_size=4096, revision=7,
                    fqrn=FQRN, certificate=ContentHash.of(b"certificate", algorithm), timestamp=1700000000).body()


# --- generating ------------------------------------------------------------------------------------------------------

def test_generated_files_and_modes(keys_dir):
    paths = key_paths(keys_dir, FQRN)
    assert sorted(p.name for p in keys_dir.iterdir()) == sorted(p.name for p in paths.values())
    for suffix, mode in [("masterkey", 0o600), ("key", 0o600), ("pub", 0o644), ("crt", 0o644)]:
        assert stat.S_IMODE(paths[suffix].stat().st_mode) == mode, suffix
    assert paths["pub"].read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert paths["crt"].read_bytes().startswith(b"-----BEGIN CERTIFICATE-----\n")
    for suffix in ("masterkey", "key"):
        assert paths[suffix].read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")


@pytest.mark.parametrize("umask", [0o077, 0o000])
def test_modes_do_not_depend_on_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        generate_keys(FQRN, tmp_path)
    finally:
        os.umask(previous)
    modes = {suffix: stat.S_IMODE(path.stat().st_mode) for suffix, path in key_paths(tmp_path, FQRN).items()}
    assert modes == {"masterkey": 0o600, "key": 0o600, "pub": 0o644, "crt": 0o644}


def test_generated_keys_and_certificate(keys):
    assert keys.signing_key.key_size == 2048 and keys.master_key.key_size == 2048
    assert keys.signing_key.private_numbers() != keys.master_key.private_numbers()
    certificate = keys.certificate
    name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert name == "example.cern.ch CernVM-FS Release Managers"
    assert certificate.issuer == certificate.subject
    certificate.verify_directly_issued_by(certificate)  # self-signed, signature valid
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    validity = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert validity == datetime.timedelta(days=365)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc


def test_our_certificate_reader_agrees_with_cryptography(keys):
    ours = Certificate.from_pem(keys.certificate_pem)
    assert ours.der == keys.certificate.public_bytes(serialization.Encoding.DER)
    assert ours.common_name == "example.cern.ch CernVM-FS Release Managers"
    assert ours.fingerprint(SHA1) == keys.fingerprint(SHA1)
    assert ours.fingerprint(SHA1).digest == keys.certificate.fingerprint(hashes.SHA1())
    numbers = keys.signing_key.public_key().public_numbers()
    assert (ours.public_key.n, ours.public_key.e) == (numbers.n, numbers.e)
    assert ours.not_after.replace(tzinfo=datetime.timezone.utc) == keys.certificate.not_valid_after_utc


def test_long_repository_names_are_cut_to_30_characters_in_the_certificate(tmp_path):
    fqrn = "a-very-long-repository-name.example.org"
    keys = generate_keys(fqrn, tmp_path)
    assert Certificate.from_pem(keys.certificate_pem).common_name == "a-very-long-repository-name.ex CernVM-FS " \
                                                                     "Release Managers"


def test_generate_refuses_to_overwrite(tmp_path):
    existing = tmp_path / (FQRN + ".crt")
    existing.write_bytes(b"precious")
    with pytest.raises(KeySetError, match=r"refusing to overwrite existing key files .*: example\.cern\.ch\.crt;"):
        generate_keys(FQRN, tmp_path)
    assert existing.read_bytes() == b"precious"
    assert list(tmp_path.iterdir()) == [existing]


def test_repository_names_that_are_not_file_names_are_refused(tmp_path):
    for fqrn in ("../evil", "", "a/b", "with space"):
        with pytest.raises(ValueError, match="is not a repository name"):
            generate_keys(fqrn, tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- loading ---------------------------------------------------------------------------------------------------------

def test_load_returns_what_was_generated(keys_dir, keys):
    assert keys.certificate_pem == key_paths(keys_dir, FQRN)["crt"].read_bytes()
    assert keys.master_public_key.public_numbers() == keys.master_key.public_key().public_numbers()
    assert keys.fqrn == FQRN


def test_master_key_is_optional(keys_dir, tmp_path):
    copy_key_set(keys_dir, tmp_path, ("pub", "key", "crt"))
    assert KeySet.load(tmp_path, FQRN).master_key is None


def test_real_key_set_loads():
    keys = KeySet.load(FIXTURE, FIXTURE_FQRN)
    assert keys.master_key is not None
    assert keys.fingerprint(SHA1).hex() == "47d4d785f610e8098eb368c74e813d391f5fce98"


@pytest.mark.parametrize("suffix,what", [("key", "signing key"), ("crt", "certificate"),
                                         ("pub", "master public key")])
def test_missing_file(keys_dir, tmp_path, suffix, what):
    copy_key_set(keys_dir, tmp_path)
    key_paths(tmp_path, FQRN)[suffix].unlink()
    with pytest.raises(KeySetError, match="missing {} .*{}".format(what, FQRN + r"\." + suffix)):
        KeySet.load(tmp_path, FQRN)


@pytest.mark.parametrize("suffix", ["masterkey", "pub", "key", "crt"])
def test_malformed_file(keys_dir, tmp_path, suffix):
    copy_key_set(keys_dir, tmp_path)
    path = key_paths(tmp_path, FQRN)[suffix]
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(KeySetError, match=r"{} is not a PEM".format(FQRN + r"\." + suffix)):
        KeySet.load(tmp_path, FQRN)


def test_unreadable_file(keys_dir, tmp_path):
    copy_key_set(keys_dir, tmp_path, ("pub", "crt", "masterkey"))
    key_paths(tmp_path, FQRN)["key"].mkdir()  # unreadable even for root, unlike a chmod 000 file
    with pytest.raises(KeySetError, match=r"cannot read signing key .*\.key: Is a directory"):
        KeySet.load(tmp_path, FQRN)


def test_encrypted_key(keys_dir, keys, tmp_path):
    copy_key_set(keys_dir, tmp_path, ("pub", "crt", "masterkey"))
    key_paths(tmp_path, FQRN)["key"].write_bytes(keys.signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(KeySetError, match="is encrypted"):
        KeySet.load(tmp_path, FQRN)


def test_signing_key_of_another_key_set(keys_dir, other_keys_dir, tmp_path):
    copy_key_set(keys_dir, tmp_path)
    copy_key_set(other_keys_dir, tmp_path, ("key",))
    with pytest.raises(KeySetError, match=r"mismatched keys: example\.cern\.ch\.key does not belong to "
                                          r"example\.cern\.ch\.crt"):
        KeySet.load(tmp_path, FQRN)


def test_master_key_of_another_key_set(keys_dir, other_keys_dir, tmp_path):
    copy_key_set(keys_dir, tmp_path)
    copy_key_set(other_keys_dir, tmp_path, ("masterkey",))
    with pytest.raises(KeySetError, match=r"mismatched keys: example\.cern\.ch\.masterkey does not belong to "
                                          r"example\.cern\.ch\.pub"):
        KeySet.load(tmp_path, FQRN)


# --- signing manifests -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=ALGORITHM_IDS)
def test_signed_manifest_verifies(keys, algorithm):
    body = manifest_body(algorithm)
    data = sign_manifest(body, algorithm, keys.signing_key)
    signed = verify_manifest(data, Certificate.from_pem(keys.certificate_pem))
    assert signed.body == body
    assert ContentHash.parse(signed.hash_text) == ContentHash.of(body, algorithm)
    assert Manifest.parse(data, expected_fqrn=FQRN).revision == 7


@needs_openssl
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=ALGORITHM_IDS)
def test_openssl_accepts_the_manifest_signature(keys_dir, keys, tmp_path, algorithm):
    signed = split_signed(sign_manifest(manifest_body(algorithm), algorithm, keys.signing_key))
    public_key = openssl("x509", "-in", str(key_paths(keys_dir, FQRN)["crt"]), "-pubkey", "-noout")
    assert public_key.returncode == 0, public_key.stderr
    (tmp_path / "cert.pub").write_bytes(public_key.stdout)
    (tmp_path / "signature").write_bytes(signed.signature)
    (tmp_path / "hash").write_bytes(signed.hash_text.encode())
    (tmp_path / "with-newline").write_bytes(signed.hash_text.encode() + b"\n")
    check = ["dgst", "-sha1", "-verify", str(tmp_path / "cert.pub"), "-signature", str(tmp_path / "signature")]
    good = openssl(*check, str(tmp_path / "hash"))
    assert good.returncode == 0 and good.stdout.strip() == b"Verified OK", good
    bad = openssl(*check, str(tmp_path / "with-newline"))
    assert bad.returncode != 0 and b"Verification failure" in bad.stdout


def test_manifest_signed_by_another_key_fails(keys, fixture_files):
    real_certificate = Certificate.from_pem((FIXTURE / "test.cern.ch.crt").read_bytes())
    data = sign_manifest(split_signed(fixture_files[0]).body, SHA1, keys.signing_key)
    with pytest.raises(SignatureError, match="does not verify with certificate"):
        verify_manifest(data, real_certificate)


@pytest.mark.parametrize("body", [b"Cabc\nS1", b"Cabc\n--\nS1\n", b"--\nS1\n"], ids=["no newline", "dash line",
                                                                                   "dash first"])
def test_manifest_body_that_would_not_split_back_is_refused(keys, body):
    with pytest.raises(ValueError, match="must end with a newline and contain no '--' line"):
        sign_manifest(body, SHA1, keys.signing_key)


# --- signing whitelists ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=ALGORITHM_IDS)
def test_signed_whitelist_verifies(keys_dir, keys, algorithm):
    now = datetime.datetime(2030, 1, 2, 3, 4, 5, 678)
    fingerprint = keys.fingerprint(algorithm)
    data = sign_whitelist(FQRN, [fingerprint], keys.master_key, days=30, algorithm=algorithm, now=now)
    master_keys = load_public_keys(key_paths(keys_dir, FQRN)["pub"].read_bytes())
    signed = verify_whitelist(data, master_keys)
    assert ContentHash.parse(signed.hash_text).algorithm == algorithm
    whitelist = Whitelist.parse(data, expected_fqrn=FQRN)
    assert signed.body.startswith(b"20300102030405\nE20300201030405\nNexample.cern.ch\n")
    assert whitelist.fingerprints == [fingerprint]
    assert whitelist.lists(Certificate.from_pem(keys.certificate_pem).fingerprint(algorithm))


def test_whitelist_time_zones(keys):
    aware = datetime.datetime(2030, 1, 2, 5, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    data = sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key, days=1, now=aware)
    assert data.startswith(b"20300102030405\nE20300103030405\n")
    before = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)
    created = Whitelist.parse(sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key)).created
    assert before <= created <= before + datetime.timedelta(minutes=1)


@needs_openssl
def test_openssl_recovers_the_whitelist_hash(keys_dir, keys, tmp_path):
    signed = split_signed(sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key))
    (tmp_path / "signature").write_bytes(signed.signature)
    pub = str(key_paths(keys_dir, FQRN)["pub"])
    recovered = openssl("pkeyutl", "-verifyrecover", "-pubin", "-inkey", pub, "-in", str(tmp_path / "signature"))
    assert recovered.returncode == 0, recovered.stderr
    assert recovered.stdout == signed.hash_text.encode()
    wrong = openssl("pkeyutl", "-verifyrecover", "-pubin", "-inkey", str(FIXTURE / "test.cern.ch.pub"),
                    "-in", str(tmp_path / "signature"))
    assert wrong.stdout != signed.hash_text.encode()


def test_whitelist_signed_by_another_master_key_fails(keys):
    data = sign_whitelist(FIXTURE_FQRN, [keys.fingerprint()], keys.master_key)
    with pytest.raises(SignatureError, match="does not verify with any"):
        verify_whitelist(data, load_public_keys((FIXTURE / "test.cern.ch.pub").read_bytes()))


def test_whitelist_must_be_valid_for_a_day(keys):
    with pytest.raises(ValueError, match="at least one day"):
        sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key, days=0)


def test_whitelist_repository_name_cannot_inject_lines(keys):
    with pytest.raises(ValueError, match="is not a repository name"):
        sign_whitelist(FQRN + "\nWcachain", [keys.fingerprint()], keys.master_key)


# --- the real repository ---------------------------------------------------------------------------------------------

def test_real_signatures_are_reproduced_byte_for_byte(fixture_files):
    """PKCS#1 v1.5 signatures are deterministic: signing the real bodies with the real keys gives the real files."""
    manifest, whitelist = fixture_files
    keys = KeySet.load(FIXTURE, FIXTURE_FQRN)
    assert sign_manifest(split_signed(manifest).body, SHA1, keys.signing_key) == manifest
    old = Whitelist.parse(whitelist)
    assert sign_whitelist(FIXTURE_FQRN, old.fingerprints, keys.master_key, days=30, now=old.created) == whitelist
    assert resign_whitelist(whitelist, keys.master_key, days=30, now=old.created) == whitelist


def test_resigned_real_whitelist(fixture_files):
    _, whitelist = fixture_files
    master_key = KeySet.load(FIXTURE, FIXTURE_FQRN).master_key
    master_keys = load_public_keys((FIXTURE / "test.cern.ch.pub").read_bytes())
    old = Whitelist.parse(whitelist)
    assert old.is_expired()
    data = resign_whitelist(whitelist, master_key, days=60)
    verify_whitelist(data, master_keys)
    new = Whitelist.parse(data, expected_fqrn=FIXTURE_FQRN)
    assert not new.is_expired()
    assert new.expires - new.created == datetime.timedelta(days=60)
    assert new.created > old.created
    assert new.fingerprints == old.fingerprints
    certificate = Certificate.from_pem((FIXTURE / "test.cern.ch.crt").read_bytes())
    assert new.lists(certificate.fingerprint())
    shake = resign_whitelist(whitelist, master_key, days=1, algorithm=SHAKE128)
    assert verify_whitelist(shake, master_keys).hash_text.endswith("-shake128")


def test_resigned_whitelist_keeps_its_hash_algorithm_and_flags(keys, keys_dir):
    whitelist = Whitelist(FQRN, datetime.datetime(2020, 1, 1), datetime.datetime(2020, 2, 1), [keys.fingerprint()],
                          ca_chain=True)
    body = whitelist.body()
    original = sign_whitelist(FQRN, [keys.fingerprint()], keys.master_key, algorithm=RMD160)
    assert split_signed(original).hash_text.endswith("-rmd160")
    resigned = resign_whitelist(original, keys.master_key)
    assert split_signed(resigned).hash_text.endswith("-rmd160")
    from_flags = resign_whitelist(body + b"--\n", keys.master_key)
    assert b"\nWcachain\n" in from_flags
    verify_whitelist(from_flags, load_public_keys(key_paths(keys_dir, FQRN)["pub"].read_bytes()))
