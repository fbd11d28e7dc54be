"""RSA signature verification of manifests and whitelists, in pure Python (cvmfs-format.md §3, §4).

Two schemes, both PKCS#1 v1.5 type-1 padding ``00 01 FF..FF 00 || payload``, checked by building the whole
expected encoding and comparing it with the decrypted signature (no parsing of attacker-controlled padding):

- manifest: the payload is SHA-1 DigestInfo || SHA-1(hash text), i.e. an ordinary PKCS#1 v1.5 SHA-1 signature,
  made with the key of the repository certificate;
- whitelist: the payload is the hash text itself (``RSA_private_encrypt``, no digest), made with the master key.

In both, the signed message is the ASCII hash text of the file's body, without its newline.
"""

import hashlib
import hmac

from . import der
from .hashing import SHA1
from .signed import SignedFileError, split_signed
from .whitelist import certificate_fingerprint

# DER of DigestInfo { AlgorithmIdentifier { sha1, NULL }, OCTET STRING (20 bytes) } up to the digest (RFC 8017 §9.2).
SHA1_DIGEST_INFO_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")
MIN_PADDING = 8  # at least 8 FF bytes (RFC 8017 §9.2)
# The limits OpenSSL puts on RSA public keys; they also bound the work a hostile certificate can cause.
MAX_MODULUS_BITS = 16384
MAX_EXPONENT_BITS = 64


class SignatureError(ValueError):
    """A manifest or whitelist is unsigned, damaged, or not signed by the expected key."""


class PublicKey(object):
    """An RSA public key: modulus ``n`` and public exponent ``e``."""

    __slots__ = ("n", "e")

    def __init__(self, n, e):
        if n <= 0 or n % 2 == 0 or n.bit_length() > MAX_MODULUS_BITS:
            raise ValueError("RSA modulus must be a positive odd number of at most {} bits".format(MAX_MODULUS_BITS))
        if e < 3 or e % 2 == 0 or e.bit_length() > MAX_EXPONENT_BITS or e >= n:
            raise ValueError("RSA public exponent must be odd, at least 3, below the modulus and at most {} bits"
                             .format(MAX_EXPONENT_BITS))
        self.n = n
        self.e = e

    @property
    def size_bytes(self):
        """Length of the modulus in bytes, which is also the length of every signature."""
        return (self.n.bit_length() + 7) // 8

    def __eq__(self, other):
        return isinstance(other, PublicKey) and (self.n, self.e) == (other.n, other.e)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.n, self.e))

    def __repr__(self):
        return "PublicKey({} bits, e={}, n=0x{}...)".format(self.n.bit_length(), self.e, "{:x}".format(self.n)[:16])


def _public_key(numbers, what):
    try:
        return PublicKey(*numbers)
    except ValueError as exc:
        raise der.DerError("{}: {}".format(what, exc))


def load_public_keys(pem_bytes):
    """The RSA keys of every ``PUBLIC KEY`` or ``RSA PUBLIC KEY`` PEM block in ``pem_bytes`` (a ``.pub`` file
    normally holds one); raises :class:`~cvmfs_pilot.cvmfs.der.DerError` if there is none or one is malformed."""
    return [_public_key(numbers, "public key") for numbers in der.rsa_public_keys_from_pem(pem_bytes)]


class Certificate(object):
    """An X.509 certificate as the client uses it: an RSA key and a fingerprint to look up in the whitelist."""

    def __init__(self, der_bytes):
        fields = der.read_certificate(der_bytes)
        self.der = fields.der
        self.public_key = _public_key(fields.public_key, "certificate public key")
        self.common_name = fields.common_name
        self.not_before = fields.not_before
        self.not_after = fields.not_after

    @classmethod
    def from_pem(cls, pem_bytes):
        """The first ``CERTIFICATE`` block of ``pem_bytes`` (the content of a certificate object ``X``)."""
        return cls(der.pem_decode(pem_bytes, der.CERTIFICATE_LABEL))

    def fingerprint(self, algorithm=SHA1):
        """The hash of the DER encoding, as whitelists list it."""
        return certificate_fingerprint(self.der, algorithm)

    def __repr__(self):
        return "Certificate({!r}, {})".format(self.common_name, self.fingerprint().hex())


def _decrypt(public_key, signature):
    """``signature^e mod n`` as bytes of the modulus length, or None for a signature of the wrong length or
    out of range."""
    size = public_key.size_bytes
    if len(signature) != size:
        return None
    s = int.from_bytes(signature, "big")
    if s >= public_key.n:
        return None
    return pow(s, public_key.e, public_key.n).to_bytes(size, "big")


def _verify_type1(public_key, payload, signature):
    """Whether ``signature`` decrypts to exactly ``00 01 FF..FF 00 || payload`` with at least 8 FF bytes."""
    padding = public_key.size_bytes - 3 - len(payload)
    if padding < MIN_PADDING:
        return False
    decrypted = _decrypt(public_key, signature)
    if decrypted is None:
        return False
    expected = b"\x00\x01" + b"\xff" * padding + b"\x00" + payload
    return hmac.compare_digest(decrypted, expected)


def verify_pkcs1v15_sha1(public_key, message, signature):
    """Whether ``signature`` is a PKCS#1 v1.5 SHA-1 signature of ``message`` by ``public_key``."""
    return _verify_type1(public_key, SHA1_DIGEST_INFO_PREFIX + hashlib.sha1(message).digest(), signature)


def verify_raw_pkcs1(public_key, message, signature):
    """Whether ``signature`` is ``message`` itself, type-1 padded and encrypted with the private key (OpenSSL's
    ``RSA_private_encrypt`` with ``RSA_PKCS1_PADDING``; the whitelist scheme)."""
    return _verify_type1(public_key, message, signature)


def _split_checked(data, what):
    """Split a signed file and check that its hash line is the hash of its body."""
    try:
        signed = split_signed(data, what)
    except SignedFileError as exc:
        raise SignatureError(str(exc))
    if not signed.hash_text and not signed.signature:
        raise SignatureError("{} is not signed: it has no '--' line followed by a hash and a signature".format(what))
    if not signed.body_hash_matches():
        raise SignatureError("{} is damaged or was altered: its hash line {!r} is not the hash of the text above "
                             "it; fetch it again, from another server if this persists".format(what, signed.hash_text))
    return signed


def verify_manifest(data, certificate):
    """Check a whole ``.cvmfspublished``: its hash line, and its signature by ``certificate``'s key. Returns the
    :class:`~cvmfs_pilot.cvmfs.signed.SignedFile`. Whether the certificate is trusted (listed on the whitelist)
    is for the caller to check."""
    signed = _split_checked(data, "manifest")
    if not verify_pkcs1v15_sha1(certificate.public_key, signed.hash_text.encode("ascii"), signed.signature):
        raise SignatureError(
            "manifest signature does not verify with certificate {!r} (SHA-1 fingerprint {}): the manifest was "
            "signed with another key or altered; check that the certificate is the one the manifest names (X) "
            "and fetch the manifest again".format(certificate.common_name, certificate.fingerprint().hex()))
    return signed


def verify_whitelist(data, master_keys):
    """Check a whole ``.cvmfswhitelist``: its hash line, and its signature by any one of ``master_keys``.
    Returns the :class:`~cvmfs_pilot.cvmfs.signed.SignedFile`; expiry and content are for the caller."""
    signed = _split_checked(data, "whitelist")
    if not master_keys:
        raise SignatureError("no master public key to check the whitelist with; configure the repository's .pub "
                             "file (CVMFS_PUBLIC_KEY or CVMFS_KEYS_DIR)")
    message = signed.hash_text.encode("ascii")
    if not any(verify_raw_pkcs1(key, message, signed.signature) for key in master_keys):
        raise SignatureError(
            "whitelist signature does not verify with any of the {} master public key(s) given: it was signed "
            "with another master key or altered; check that CVMFS_PUBLIC_KEY/CVMFS_KEYS_DIR hold this "
            "repository's .pub file".format(len(master_keys)))
    return signed
