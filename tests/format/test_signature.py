"""Signature verification (cvmfs_pilot.cvmfs.signature) and the DER/PEM reader (cvmfs_pilot.cvmfs.der): the real
test.cern.ch manifest, whitelist and certificate, tampered copies, crafted RSA encodings and malformed DER/PEM."""

import base64
import datetime
import hashlib
import random
import tarfile
import zlib
from pathlib import Path

import pytest

from cvmfs_pilot.cvmfs import der
from cvmfs_pilot.cvmfs.der import DerError
from cvmfs_pilot.cvmfs.hashing import SHA1, SUFFIX_CERTIFICATE, ContentHash
from cvmfs_pilot.cvmfs.manifest import Manifest
from cvmfs_pilot.cvmfs.signature import (
    Certificate,
    PublicKey,
    SignatureError,
    load_public_keys,
    verify_manifest,
    verify_pkcs1v15_sha1,
    verify_raw_pkcs1,
    verify_whitelist,
)
from cvmfs_pilot.cvmfs.signed import make_hash_text, split_signed
from cvmfs_pilot.cvmfs.whitelist import Whitelist, format_fingerprint

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = PROJECT_ROOT / ".." / "shared" / "fixtures" / "test.cern.ch"
FQRN = "test.cern.ch"

# Facts about the fixture from outside this code: `openssl x509 -fingerprint -sha1 -in test.cern.ch.crt`,
# `openssl x509 -text`, and the hash lines of the real files.
CERTIFICATE_FINGERPRINT = "47:D4:D7:85:F6:10:E8:09:8E:B3:68:C7:4E:81:3D:39:1F:5F:CE:98"
CERTIFICATE_NAME = "test.cern.ch CernVM-FS Release Managers"
MANIFEST_HASH = "08f54c2fc78d1b526a779080a520f42fe2c4e682"
WHITELIST_HASH = "a83286409bb3dcfdb649bee93546b5f4d5157954"
# `openssl rsa -pubin -in test.cern.ch.pub -RSAPublicKey_out`: the master key in PKCS#1 form.
MASTER_KEY_PKCS1_PEM = b"""-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAueS/yBwR4UlRsgkv7hcMljvt/KyrhkI5y7n7ksLBFumjPhieaWz3
L44s4Y1dUJ2H8krRqLXVjQ0X5x/F/nCHerxxjuei4Vu9yG6BFqow0ZdmjqJzU4sw
RylBkSjf4QVOVSxUcbd7sL2QVbRH9g+ChQ42pB+PD0CcEZp3VEsFV4wI9IY7EMRU
C6dwM+LG0jubvhGbvlaqtufGXDESRJEuRM76cnfxh/0qui8Vbs93St2VhsahJWcN
GdeIaXlVsMyI77u1QhztPvF39+oDWEsW2xAkfJ5d6NZJdrmRBD3agh5Zj8DuK0Vt
tsvXwsSMw5gwBSRGLJIB8qXf254uouuqlQIDAQAB
-----END RSA PUBLIC KEY-----
"""
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")  # RFC 8017 §9.2, note 1
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    target = tmp_path_factory.mktemp("test.cern.ch")
    with tarfile.open(str(FIXTURE / "repository.tar.gz")) as tar:
        options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(str(target), **options)
    return target / "cvmfs" / FQRN


@pytest.fixture(scope="module")
def manifest_data(repository):
    return (repository / ".cvmfspublished").read_bytes()


@pytest.fixture(scope="module")
def whitelist_data(repository):
    return (repository / ".cvmfswhitelist").read_bytes()


@pytest.fixture(scope="module")
def certificate(repository, manifest_data):
    """The certificate object X that the manifest names, checked against its hash and decompressed."""
    certificate_hash = Manifest.parse(manifest_data, expected_fqrn=FQRN).certificate
    stored = (repository / certificate_hash.object_path(SUFFIX_CERTIFICATE)).read_bytes()
    assert ContentHash.of(stored, certificate_hash.algorithm) == certificate_hash
    return Certificate.from_pem(zlib.decompress(stored))


@pytest.fixture(scope="module")
def master_keys():
    return load_public_keys((FIXTURE / "test.cern.ch.pub").read_bytes())


def private_numbers(filename):
    """``(n, d)`` of a fixture ``BEGIN RSA PRIVATE KEY`` file (PKCS#1 RSAPrivateKey), read with the DER reader."""
    key_der = der.pem_decode((FIXTURE / filename).read_bytes(), "RSA PRIVATE KEY")
    fields = der.sequence(der.parse(key_der), "private key", count=9)
    n, _, d = (der.read_integer(field, "private key") for field in fields[1:4])
    return n, d


def private_encrypt(filename, encoded):
    """The RSA private-key operation on an already padded 256-byte block: a signature of any encoding we like."""
    n, d = private_numbers(filename)
    return pow(int.from_bytes(encoded, "big"), d, n).to_bytes(256, "big")


def type1(payload, padding=None):
    """``00 01 FF..FF 00 || payload`` filling 256 bytes, or with ``padding`` FF bytes."""
    padding = 256 - 3 - len(payload) if padding is None else padding
    return b"\x00\x01" + b"\xff" * padding + b"\x00" + payload


def flip(data, index, mask=0x01):
    changed = bytearray(data)
    changed[index] ^= mask
    return bytes(changed)


# --- the real repository ---------------------------------------------------------------------------------------------

def test_real_manifest_verifies_with_its_certificate_object(manifest_data, certificate):
    signed = verify_manifest(manifest_data, certificate)
    assert signed.hash_text == MANIFEST_HASH
    assert signed.body.startswith(b"C36f949c653fc2441ce46b7c123751c813a04f65c\n")
    assert len(signed.signature) == 256


def test_certificate_object_is_the_crt_file(certificate):
    from_file = Certificate.from_pem((FIXTURE / "test.cern.ch.crt").read_bytes())
    assert from_file.der == certificate.der
    assert from_file.public_key == certificate.public_key


def test_certificate_fields(certificate):
    assert format_fingerprint(certificate.fingerprint(SHA1)) == CERTIFICATE_FINGERPRINT
    assert certificate.common_name == CERTIFICATE_NAME
    assert certificate.not_before == datetime.datetime(2015, 6, 11, 13, 29, 13)
    assert certificate.not_after == datetime.datetime(2016, 6, 10, 13, 29, 13)
    assert certificate.public_key.size_bytes == 256
    assert certificate.public_key.e == 65537
    assert "{:x}".format(certificate.public_key.n).startswith("e5340d08c3dfb712")


def test_certificate_is_on_the_real_whitelist(certificate, whitelist_data):
    whitelist = Whitelist.parse(whitelist_data, expected_fqrn=FQRN)
    assert whitelist.lists(certificate.fingerprint(SHA1))


def test_real_whitelist_verifies_with_the_master_key(whitelist_data, master_keys):
    signed = verify_whitelist(whitelist_data, master_keys)
    assert signed.hash_text == WHITELIST_HASH
    assert Whitelist.parse(whitelist_data).is_expired()  # the signature is valid even so; expiry is separate


def test_pkcs1_and_subject_public_key_info_forms_give_the_same_key(master_keys):
    assert len(master_keys) == 1
    assert load_public_keys(MASTER_KEY_PKCS1_PEM) == master_keys
    assert master_keys[0].size_bytes == 256


def test_all_keys_of_a_file_are_loaded_and_other_blocks_ignored(master_keys, certificate):
    data = (b"comment\n" + (FIXTURE / "test.cern.ch.crt").read_bytes() + (FIXTURE / "test.cern.ch.pub").read_bytes()
            + MASTER_KEY_PKCS1_PEM)
    assert load_public_keys(data) == master_keys * 2


def test_whitelist_is_valid_if_any_master_key_matches(whitelist_data, master_keys, certificate):
    assert verify_whitelist(whitelist_data, [certificate.public_key] + master_keys).hash_text == WHITELIST_HASH
    with pytest.raises(SignatureError, match="does not verify with any of the 1 master"):
        verify_whitelist(whitelist_data, [certificate.public_key])
    with pytest.raises(SignatureError, match="no master public key"):
        verify_whitelist(whitelist_data, [])


def test_manifest_with_another_certificate_key_fails(manifest_data, certificate, master_keys):
    """The fixture certificate with the master key's modulus in place of its own: a well-formed, wrong key."""
    own = certificate.public_key.n.to_bytes(256, "big")
    other = master_keys[0].n.to_bytes(256, "big")
    wrong = Certificate(certificate.der.replace(own, other))
    assert wrong.public_key == master_keys[0]
    with pytest.raises(SignatureError, match="does not verify with certificate"):
        verify_manifest(manifest_data, wrong)


def test_schemes_are_not_interchangeable(manifest_data, whitelist_data, certificate, master_keys):
    manifest = split_signed(manifest_data)
    whitelist = split_signed(whitelist_data)
    assert verify_pkcs1v15_sha1(certificate.public_key, manifest.hash_text.encode(), manifest.signature)
    assert not verify_raw_pkcs1(certificate.public_key, manifest.hash_text.encode(), manifest.signature)
    assert verify_raw_pkcs1(master_keys[0], whitelist.hash_text.encode(), whitelist.signature)
    assert not verify_pkcs1v15_sha1(master_keys[0], whitelist.hash_text.encode(), whitelist.signature)


# --- tampering -------------------------------------------------------------------------------------------------------

def _tampered(data, where):
    signed = split_signed(data)
    hash_start = len(signed.body) + 3
    if where == "body":
        return flip(data, 3)
    if where == "hash line":
        return flip(data, hash_start + 5)
    if where == "signature":
        return flip(data, len(data) - 1)
    if where == "body with recomputed hash":  # what an attacker would do: the hash then matches, the signature not
        body = signed.body.replace(b"\nS3\n", b"\nS4\n").replace(b"\nE2016", b"\nE2099")
        assert body != signed.body
        return body + b"--\n" + make_hash_text(body, SHA1).encode() + b"\n" + signed.signature
    if where == "signature too long":
        return data + b"\x00"
    if where == "signature too short":
        return data[:-1]
    if where == "signature with a leading zero byte":
        return data[:hash_start] + signed.hash_text.encode() + b"\n\x00" + signed.signature
    if where == "no signature":
        return signed.body
    raise AssertionError(where)


TAMPERINGS = [
    ("body", "not the hash of the text above it"),
    ("hash line", "not the hash of the text above it"),
    ("signature", "does not verify"),
    ("body with recomputed hash", "does not verify"),
    ("signature too long", "does not verify"),
    ("signature too short", "does not verify"),
    ("signature with a leading zero byte", "does not verify"),
    ("no signature", "is not signed"),
]


@pytest.mark.parametrize("where,message", TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_tampered_manifest_fails(manifest_data, certificate, where, message):
    with pytest.raises(SignatureError, match="^manifest .*" + message):
        verify_manifest(_tampered(manifest_data, where), certificate)


@pytest.mark.parametrize("where,message", TAMPERINGS, ids=[t[0] for t in TAMPERINGS])
def test_tampered_whitelist_fails(whitelist_data, master_keys, where, message):
    with pytest.raises(SignatureError, match="^whitelist .*" + message):
        verify_whitelist(_tampered(whitelist_data, where), master_keys)


def test_random_byte_flips_of_the_manifest_never_verify(manifest_data, certificate):
    rng = random.Random(1452701059)
    for _ in range(300):
        data = flip(manifest_data, rng.randrange(len(manifest_data)), 1 << rng.randrange(8))
        with pytest.raises(SignatureError):
            verify_manifest(data, certificate)


# --- crafted RSA encodings -------------------------------------------------------------------------------------------

def test_crafted_manifest_signature_equals_the_real_one(manifest_data, certificate):
    """Our idea of EM (padding, SHA-1 DigestInfo) is what cvmfs_server signed: the same key gives the same bytes."""
    signed = split_signed(manifest_data)
    encoded = type1(SHA1_DIGEST_INFO + hashlib.sha1(signed.hash_text.encode()).digest())
    assert private_encrypt("test.cern.ch.key", encoded) == signed.signature


def test_signature_at_or_above_the_modulus_is_rejected(master_keys):
    key = master_keys[0]
    message = b"x" * 40
    valid = private_encrypt("test.cern.ch.masterkey", type1(message))
    assert verify_raw_pkcs1(key, message, valid)
    above = (int.from_bytes(valid, "big") + key.n).to_bytes(256, "big")  # same value mod n, still 256 bytes
    assert not verify_raw_pkcs1(key, message, above)
    assert not verify_raw_pkcs1(key, message, key.n.to_bytes(256, "big"))


@pytest.mark.parametrize("encoding,accepted", [
    (lambda m: type1(SHA1_DIGEST_INFO + hashlib.sha1(m).digest()), True),
    (lambda m: type1(SHA256_DIGEST_INFO + hashlib.sha256(m).digest()), False),
    (lambda m: type1(SHA1_DIGEST_INFO + hashlib.sha1(m).digest() + b"garbage"), False),
    (lambda m: type1(SHA1_DIGEST_INFO + hashlib.sha1(m).digest(), padding=8) + b"\x00" * 210, False),
    (lambda m: b"\x00\x02" + type1(SHA1_DIGEST_INFO + hashlib.sha1(m).digest())[2:], False),
    (lambda m: type1(hashlib.sha1(m).digest()), False),
], ids=["valid", "sha256 digest", "trailing bytes", "short padding, zero fill", "block type 2", "no DigestInfo"])
def test_pkcs1v15_sha1_accepts_only_the_exact_encoding(master_keys, encoding, accepted):
    message = MANIFEST_HASH.encode()
    signature = private_encrypt("test.cern.ch.masterkey", encoding(message))
    assert verify_pkcs1v15_sha1(master_keys[0], message, signature) is accepted


def test_raw_scheme_needs_eight_padding_bytes(master_keys):
    key = master_keys[0]
    fits = b"m" * (256 - 3 - 8)
    assert verify_raw_pkcs1(key, fits, private_encrypt("test.cern.ch.masterkey", type1(fits)))
    too_long = b"m" * (256 - 3 - 7)
    encoded = type1(too_long)
    assert encoded.count(b"\xff") == 7 and len(encoded) == 256
    assert not verify_raw_pkcs1(key, too_long, private_encrypt("test.cern.ch.masterkey", encoded))


def test_public_key_rejects_unusable_numbers(master_keys):
    n = master_keys[0].n
    for bad_n, bad_e in [(n, 1), (n, 65536), (n, n + 2), (n, 2 ** 65 + 1), (n + 1, 65537), (-n, 65537)]:
        with pytest.raises(ValueError):
            PublicKey(bad_n, bad_e)


# --- malformed DER and PEM -------------------------------------------------------------------------------------------

def tlv(tag, content):
    """A DER element with minimal definite length."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    length = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def integer(value):
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


RSA_OID = tlv(0x06, bytes.fromhex("2a864886f70d010101"))
EC_OID = tlv(0x06, bytes.fromhex("2a8648ce3d0201"))
NULL = b"\x05\x00"


def spki(n, e, algorithm=RSA_OID + NULL, unused_bits=b"\x00"):
    return tlv(0x30, tlv(0x30, algorithm) + tlv(0x03, unused_bits + tlv(0x30, integer(n) + integer(e))))


def pem(label, body):
    return b"-----BEGIN " + label + b"-----\n" + body + b"\n-----END " + label + b"-----\n"


@pytest.fixture(scope="module")
def master_numbers(master_keys):
    return master_keys[0].n, master_keys[0].e


def test_der_helpers_reproduce_the_real_public_key(master_numbers):
    """Positive control for the malformed cases below: our encoder writes exactly the real .pub's DER."""
    real = der.pem_decode((FIXTURE / "test.cern.ch.pub").read_bytes(), "PUBLIC KEY")
    assert spki(*master_numbers) == real
    assert der.rsa_public_key_from_spki(real) == master_numbers


def _cases(n, e):
    real = spki(n, e)
    key_sequence = tlv(0x30, integer(n) + integer(e))
    return [
        ("a single byte", b"\x30", "truncated"),
        ("truncated by one byte", real[:-1], "claims"),
        ("truncated inside the header", real[:3], "length field"),
        ("truncated to the first element", real[:40], "claims"),
        ("length overflows", b"\x30\x84\xff\xff\xff\xff" + real[4:], "claims"),
        ("length field too long", b"\x30\x85\x00\x00\x00\x01\x22" + real[4:], "too large"),
        ("length past the end", real[:3] + bytes([real[3] + 1]) + real[4:], "claims"),
        ("non-minimal long form", b"\x30\x81\x05" + integer(1) + integer(3), "non-minimal"),
        ("length with leading zero", b"\x30\x83\x00" + real[2:], "non-minimal"),
        ("indefinite length", b"\x30\x80" + real[4:] + b"\x00\x00", "indefinite"),
        ("trailing garbage", real + b"\x00", "unexpected bytes"),
        ("two keys back to back", real + real, "unexpected bytes"),
        ("multi-byte tag", b"\x1f\x81\x01\x00", "multi-byte tag"),
        ("wrong algorithm", spki(n, e, EC_OID + NULL), "not an RSA key"),
        ("algorithm without parameters", spki(n, e, RSA_OID), "must be a single NULL"),
        ("algorithm parameters not NULL", spki(n, e, RSA_OID + integer(0)), "must be a single NULL"),
        ("key bits with unused bits", spki(n, e, unused_bits=b"\x01"), "whole bytes"),
        ("negative modulus", spki(-n, e), "modulus: must be positive"),
        ("zero exponent", spki(n, 0), "exponent: must be positive"),
        ("even modulus", spki(n + 1, e), "modulus must be a positive odd"),
        ("exponent 1", spki(n, 1), "exponent must be odd, at least 3"),
        ("non-minimal integer", tlv(0x30, tlv(0x30, RSA_OID + NULL) + tlv(0x03, b"\x00" + tlv(
            0x30, tlv(0x02, b"\x00" + integer(n)[4:]) + integer(e)))), "redundant leading bytes"),
        ("empty integer", tlv(0x30, tlv(0x30, RSA_OID + NULL) + tlv(0x03, b"\x00" + tlv(
            0x30, integer(n) + b"\x02\x00"))), "empty INTEGER"),
        ("three integers", tlv(0x30, tlv(0x30, RSA_OID + NULL) + tlv(0x03, b"\x00" + tlv(
            0x30, integer(n) + integer(e) + integer(e)))), "SEQUENCE of 2 elements, found 3"),
        ("garbage after the key inside the bit string", tlv(0x30, tlv(0x30, RSA_OID + NULL) + tlv(
            0x03, b"\x00" + key_sequence + b"\x00")), "unexpected bytes"),
        ("integer instead of sequence", integer(n), "expected SEQUENCE, found INTEGER"),
        ("empty OID", spki(n, e, b"\x06\x00" + NULL), "OBJECT IDENTIFIER is empty"),
        ("incomplete OID", spki(n, e, tlv(0x06, bytes.fromhex("2a864886f7")) + NULL), "incomplete"),
        ("non-minimal OID", spki(n, e, tlv(0x06, bytes.fromhex("2a80864886f70d010101")) + NULL), "redundant"),
    ]


CASE_IDS = [case[0] for case in _cases(3 * 5 * 7, 3)]


@pytest.mark.parametrize("case", CASE_IDS)
def test_malformed_public_key_der(master_numbers, case):
    _, data, message = [c for c in _cases(*master_numbers) if c[0] == case][0]
    with pytest.raises(DerError, match=message):
        load_public_keys(pem(b"PUBLIC KEY", base64.encodebytes(data).strip()))


def test_deep_nesting_is_refused(master_numbers):
    nested = b""
    for _ in range(der.MAX_DEPTH + 1):
        assert der.parse(tlv(0x30, nested)) is not None  # up to the limit: fine
        nested = tlv(0x30, nested)
    with pytest.raises(DerError, match="nested deeper"):
        der.parse(tlv(0x30, nested))
    very_deep = b""
    for _ in range(5000):
        very_deep = tlv(0x30, very_deep)
    with pytest.raises(DerError, match="nested deeper"):
        der.rsa_public_key_from_spki(very_deep)


@pytest.mark.parametrize("make,message", [
    (lambda body: b"", "no '-----BEGIN PUBLIC KEY-----'"),
    (lambda body: b"not a key at all\n", "no '-----BEGIN PUBLIC KEY-----'"),
    (lambda body: pem(b"PUBLIC KEY", b"!!!!" + body), "not valid base64"),
    (lambda body: pem(b"PUBLIC KEY", body[1:]), "not valid base64"),
    (lambda body: pem(b"PUBLIC KEY", body + b"="), "not canonical base64"),
    (lambda body: pem(b"PUBLIC KEY", body[:10] + b" " + body[10:]), "not valid base64"),
    (lambda body: pem(b"PUBLIC KEY", b"AB=="), "not canonical"),
    (lambda body: pem(b"PUBLIC KEY", b""), "is empty"),
    (lambda body: pem(b"PUBLIC KEY", body).replace(b"-----END PUBLIC KEY-----\n", b""),
     "has no '-----END PUBLIC KEY-----'"),
    (lambda body: pem(b"PUBLIC KEY", body).replace(b"END PUBLIC", b"END RSA PUBLIC"), "ends with"),
    (lambda body: pem(b"PUBLIC KEY", "\u00e9".encode("latin-1") + body), "not valid base64"),
    (lambda body: "-----BEGIN PUBLIC KEY-----", "must be bytes"),
], ids=["empty", "no block", "bad characters", "bad length", "extra padding", "space",
        "non-canonical bits", "empty block", "no end line", "wrong end label", "non-ASCII", "text not bytes"])
def test_malformed_pem(make, message):
    """``make`` turns the base64 body of the real .pub (the lines between the armour) into malformed PEM."""
    body = b"\n".join(line for line in (FIXTURE / "test.cern.ch.pub").read_bytes().splitlines()
                      if not line.startswith(b"-----"))
    assert load_public_keys(pem(b"PUBLIC KEY", body))  # the unmodified body is fine
    with pytest.raises(DerError, match=message):
        load_public_keys(make(body))


def test_whitespace_around_lines_and_crlf_are_accepted(master_keys):
    data = (FIXTURE / "test.cern.ch.pub").read_bytes().replace(b"\n", b"  \r\n")
    assert load_public_keys(data) == master_keys


@pytest.mark.parametrize("change,message", [
    ((b"150611132913Z", b"150611132913+"), "not in DER form"),
    ((b"150611132913Z", b"151311132913Z"), "not a valid date"),
    ((b"\x06\x03\x55\x04\x03\x0c", b"\x06\x03\x55\x04\x03\x04"), "not a supported string type"),
    ((b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01", b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x02"),
     "not an RSA key: its algorithm is 1.2.840.113549.1.1.2"),
], ids=["time zone", "month 13", "common name type", "key algorithm"])
def test_malformed_certificate_fields(certificate, change, message):
    old, new = change
    assert old in certificate.der
    with pytest.raises(DerError, match=message):
        Certificate(certificate.der.replace(old, new))


@pytest.mark.parametrize("tag,text,expected", [
    (0x17, b"500101000000Z", datetime.datetime(1950, 1, 1)),
    (0x17, b"491231235959Z", datetime.datetime(2049, 12, 31, 23, 59, 59)),
    (0x18, b"20500101000000Z", datetime.datetime(2050, 1, 1)),
    (0x18, b"19500101000000Z", datetime.datetime(1950, 1, 1)),
])
def test_times(tag, text, expected):
    assert der.read_time(der.parse(tlv(tag, text)), "time") == expected


@pytest.mark.parametrize("tag,text", [
    (0x17, b"5001010000Z"), (0x17, b"500101000000"), (0x17, b"500101000000+0100"), (0x18, b"500101000000Z"),
    (0x18, b"20500101000000.5Z"), (0x18, b"2050010100000 Z"), (0x17, b"500101000060Z"), (0x02, b"500101000000Z"),
], ids=["no seconds", "no Z", "offset", "two-digit year", "fraction", "space", "second 60", "not a time"])
def test_malformed_times(tag, text):
    with pytest.raises(DerError):
        der.read_time(der.parse(tlv(tag, text)), "time")


def test_certificate_structure_is_checked(certificate):
    tbs, algorithm, _ = der.parse(certificate.der).children
    with pytest.raises(DerError, match="SEQUENCE of 3 elements, found 2"):
        Certificate(tlv(0x30, tbs.encoding + algorithm.encoding))
    with pytest.raises(DerError, match="no '-----BEGIN CERTIFICATE-----'"):
        Certificate.from_pem((FIXTURE / "test.cern.ch.pub").read_bytes())


def test_fuzzed_certificates_give_der_error_or_a_certificate(certificate):
    """Every truncation and random bit flips of the real certificate, in DER and PEM: nothing but DerError."""
    rng = random.Random(20150611)
    original = certificate.der
    pem_text = (FIXTURE / "test.cern.ch.crt").read_bytes()
    cases = [(Certificate, original[:end]) for end in range(len(original))]
    for _ in range(1500):
        source = rng.choice([original, pem_text])
        mutated = bytearray(source)
        for _ in range(rng.randint(1, 3)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        cases.append((Certificate if source is original else Certificate.from_pem, bytes(mutated)))
    outcomes = {"accepted": 0, "rejected": 0}
    for read, data in cases:
        try:
            read(data)
        except DerError:
            outcomes["rejected"] += 1
        else:
            outcomes["accepted"] += 1
    assert outcomes["accepted"] > 0 and outcomes["rejected"] > len(original)


def test_fuzzed_public_keys_give_der_error_or_keys():
    rng = random.Random(65537)
    original = (FIXTURE / "test.cern.ch.pub").read_bytes()
    key_der = der.pem_decode(original, "PUBLIC KEY")
    for end in range(len(key_der)):
        with pytest.raises(DerError):
            der.rsa_public_key_from_spki(key_der[:end])
    for _ in range(1000):
        mutated = bytearray(rng.choice([original, key_der]))
        mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        try:
            if mutated.startswith(b"-----"):
                load_public_keys(bytes(mutated))
            else:
                der.rsa_public_key_from_spki(bytes(mutated))
        except DerError:
            pass
