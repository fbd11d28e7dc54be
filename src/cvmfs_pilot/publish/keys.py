"""Repository key sets: generate and load them, sign manifests and whitelists with them (cvmfs-format.md §3, §4).

A key set of repository FQRN is four PEM files named as ``cvmfs_server`` names them: ``FQRN.masterkey`` (master
private key; signs whitelists), ``FQRN.pub`` (its public key, which clients trust), ``FQRN.key`` (signing key;
signs manifests) and ``FQRN.crt`` (self-signed certificate of the signing key; whitelists list its fingerprint).
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ..cvmfs.hashing import SHA1, ContentHash
from ..cvmfs.signed import SignedFile, make_hash_text, split_signed
from ..cvmfs.whitelist import Whitelist, certificate_fingerprint

KEY_BITS = 2048
PUBLIC_EXPONENT = 65537
CERTIFICATE_DAYS = 365
MIN_PADDING = 8  # FF bytes of PKCS#1 type-1 padding (RFC 8017 §9.2)
_FQRN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")

KEY_FILE_SUFFIXES = ("masterkey", "pub", "key", "crt")


class KeySetError(ValueError):
    """A key file is missing, unreadable, malformed or does not match the others, or would be overwritten."""


def key_paths(keys_dir: str | os.PathLike, fqrn: str) -> dict[str, Path]:
    """The four key file paths of ``fqrn`` in ``keys_dir``, by suffix (``masterkey``, ``pub``, ``key``, ``crt``)."""
    _check_fqrn(fqrn)
    return {suffix: Path(keys_dir) / f"{fqrn}.{suffix}" for suffix in KEY_FILE_SUFFIXES}


def _check_fqrn(fqrn: str) -> None:
    if not _FQRN.match(fqrn):
        raise ValueError(f"{fqrn!r} is not a repository name (letters, digits, '.', '-', '_')")


@dataclass(frozen=True)
class KeySet:
    """The keys of one repository. ``certificate_pem`` is the ``.crt`` file as it is, which is what the
    repository's certificate object ``X`` holds. ``master_key`` is None where only manifests are signed."""

    fqrn: str
    signing_key: rsa.RSAPrivateKey
    certificate_pem: bytes
    certificate: x509.Certificate
    master_public_key: rsa.RSAPublicKey
    master_key: rsa.RSAPrivateKey | None = None

    def fingerprint(self, algorithm: int = SHA1) -> ContentHash:
        """The certificate fingerprint that the whitelist must list."""
        return certificate_fingerprint(self.certificate.public_bytes(serialization.Encoding.DER), algorithm)

    @classmethod
    def load(cls, keys_dir: str | os.PathLike, fqrn: str) -> KeySet:
        """Load the key set of ``fqrn`` from ``keys_dir``; ``FQRN.masterkey`` may be absent."""
        paths = key_paths(keys_dir, fqrn)
        signing_key = _load_private_key(paths["key"], "signing key")
        certificate_pem = _read(paths["crt"], "certificate")
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError as exc:
            raise KeySetError(f"certificate {paths['crt']} is not a PEM certificate ({exc})") from None
        master_public_key = _load_public_key(paths["pub"])
        master_key = None
        if os.path.lexists(paths["masterkey"]):
            master_key = _load_private_key(paths["masterkey"], "master key")
        if not _same_key(signing_key.public_key(), certificate.public_key()):
            raise KeySetError(f"mismatched keys: {fqrn}.key does not belong to {fqrn}.crt (in {keys_dir}); "
                              f"put the matching pair together")
        if master_key is not None and not _same_key(master_key.public_key(), master_public_key):
            raise KeySetError(f"mismatched keys: {fqrn}.masterkey does not belong to {fqrn}.pub (in {keys_dir}); "
                              f"put the matching pair together")
        return cls(fqrn, signing_key, certificate_pem, certificate, master_public_key, master_key)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeySetError(f"missing {what} {path}: copy the repository's key files there, or generate a new key "
                          f"set") from None
    except OSError as exc:
        raise KeySetError(f"cannot read {what} {path}: {exc.strerror}") from None


def _load_private_key(path: Path, what: str) -> rsa.RSAPrivateKey:
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeySetError(f"{what} {path} is encrypted; CernVM-FS keys are stored without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeySetError(f"{what} {path} is not a PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeySetError(f"{what} {path} is not an RSA key; CernVM-FS uses RSA keys")
    return key


def _load_public_key(path: Path) -> rsa.RSAPublicKey:
    data = _read(path, "master public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeySetError(f"master public key {path} is not a PEM public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeySetError(f"master public key {path} is not an RSA key; CernVM-FS uses RSA keys")
    return key


def _same_key(a, b) -> bool:
    return isinstance(a, rsa.RSAPublicKey) and isinstance(b, rsa.RSAPublicKey) and \
        a.public_numbers() == b.public_numbers()


def generate_keys(fqrn: str, out_dir: str | os.PathLike) -> KeySet:
    """Create a new key set for ``fqrn`` in ``out_dir`` (created if needed), like ``cvmfs_server mkfs``: 2048-bit
    RSA keys, a self-signed certificate valid for 365 days. Private keys get mode 0600. Existing key files are
    never overwritten."""
    paths = key_paths(out_dir, fqrn)
    existing = [path.name for path in paths.values() if os.path.lexists(path)]
    if existing:
        raise KeySetError(f"refusing to overwrite existing key files in {out_dir}: {', '.join(existing)}; "
                          f"move them away or choose another directory")
    master_key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)
    signing_key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)
    certificate = _self_signed_certificate(fqrn, signing_key)
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    _write_new(paths["masterkey"], _private_key_pem(master_key), 0o600)
    _write_new(paths["pub"], master_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    _write_new(paths["key"], _private_key_pem(signing_key), 0o600)
    _write_new(paths["crt"], certificate_pem, 0o644)
    return KeySet(fqrn, signing_key, certificate_pem, certificate, master_key.public_key(), master_key)


def _self_signed_certificate(fqrn: str, signing_key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{fqrn[:30]} CernVM-FS Release Managers")])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return (x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(signing_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=CERTIFICATE_DAYS))
            .sign(signing_key, hashes.SHA256()))


def _private_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """Unencrypted PKCS#1 PEM (``BEGIN RSA PRIVATE KEY``), the form of ``cvmfs_server``'s key files."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (failing if it exists, even as a symlink) with exactly ``mode``, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def _check_manifest_body(body: bytes) -> None:
    """A body to sign must be complete lines and must not contain the ``--`` line that ends it."""
    if not body.endswith(b"\n") or body.startswith(b"--\n") or b"\n--\n" in body:
        raise ValueError("manifest text to sign must end with a newline and contain no '--' line")


def sign_manifest(body: bytes, algorithm: int, signing_key: rsa.RSAPrivateKey) -> bytes:
    """The whole ``.cvmfspublished``: ``body``, ``--``, the hash of ``body`` (with ``algorithm``'s id) and the
    PKCS#1 v1.5 SHA-1 signature of that hash text."""
    _check_manifest_body(body)
    hash_text = make_hash_text(body, algorithm)
    signature = signing_key.sign(hash_text.encode("ascii"), padding.PKCS1v15(), hashes.SHA1())
    return SignedFile(body, hash_text, signature).serialize()


def sign_whitelist(fqrn: str, fingerprints: list[ContentHash], master_key: rsa.RSAPrivateKey, days: int = 30,
                   algorithm: int = SHA1, now: datetime.datetime | None = None) -> bytes:
    """The whole ``.cvmfswhitelist`` for ``fqrn`` listing ``fingerprints``, created ``now`` (UTC; naive datetimes
    are taken as UTC) and expiring ``days`` later, signed with the master key."""
    _check_fqrn(fqrn)
    created, expires = _validity(now, days)
    return _sign_whitelist(Whitelist(fqrn, created, expires, fingerprints), master_key, algorithm)


def resign_whitelist(whitelist_bytes: bytes, master_key: rsa.RSAPrivateKey, days: int = 30,
                     algorithm: int | None = None, now: datetime.datetime | None = None) -> bytes:
    """A fresh copy of an existing whitelist: same repository, fingerprints and flags, created ``now`` and
    expiring ``days`` later. ``algorithm`` defaults to the one of the existing hash line (SHA-1 if it has none)."""
    old = Whitelist.parse(whitelist_bytes)
    if algorithm is None:
        hash_text = split_signed(whitelist_bytes, "whitelist").hash_text
        algorithm = ContentHash.parse(hash_text).algorithm if hash_text else SHA1
    created, expires = _validity(now, days)
    whitelist = Whitelist(old.fqrn, created, expires, old.fingerprints, pkcs7=old.pkcs7, ca_chain=old.ca_chain)
    return _sign_whitelist(whitelist, master_key, algorithm)


def _validity(now: datetime.datetime | None, days: int) -> tuple[datetime.datetime, datetime.datetime]:
    """Creation and expiry time of a whitelist: ``now`` (default: the current time) in UTC, without time zone and
    microseconds as whitelists write it, and ``days`` later."""
    if days <= 0:
        raise ValueError(f"a whitelist must be valid for at least one day, not {days}")
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    created = now.replace(microsecond=0)
    return created, created + datetime.timedelta(days=days)


def _sign_whitelist(whitelist: Whitelist, master_key: rsa.RSAPrivateKey, algorithm: int) -> bytes:
    body = whitelist.body()
    hash_text = make_hash_text(body, algorithm)
    return SignedFile(body, hash_text, _sign_raw_pkcs1(master_key, hash_text.encode("ascii"))).serialize()


def _sign_raw_pkcs1(private_key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """``RSA_private_encrypt(message, RSA_PKCS1_PADDING)``: ``(00 01 FF..FF 00 || message)^d mod n``, which
    ``cryptography`` cannot do (it always signs a digest). Plain Python arithmetic, not constant-time: meant for
    the occasional, offline signing of a whitelist."""
    numbers = private_key.private_numbers()
    n, d = numbers.public_numbers.n, numbers.d
    size = (n.bit_length() + 7) // 8
    padding_length = size - 3 - len(message)
    if padding_length < MIN_PADDING:
        raise ValueError(f"a {len(message)}-byte message does not fit a {size * 8}-bit RSA key")
    encoded = b"\x00\x01" + b"\xff" * padding_length + b"\x00" + message
    return pow(int.from_bytes(encoded, "big"), d, n).to_bytes(size, "big")
