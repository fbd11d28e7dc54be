"""A small, strict reader for PEM and DER: RSA public keys and the few fields of X.509 certificates that the
client needs (cvmfs-format.md §4).

Keys come as ``BEGIN PUBLIC KEY`` (SubjectPublicKeyInfo) or ``BEGIN RSA PUBLIC KEY`` (PKCS#1) blocks, certificates
as ``BEGIN CERTIFICATE`` blocks. The whole DER tree is checked, not only the fields read: definite and minimal
lengths, nothing past the end of an element or after the last one, bounded nesting, single-byte tags, minimal
integers. Any malformed input raises :class:`DerError`.
"""

import base64
import binascii
import collections
import datetime

MAX_DEPTH = 16  # X.509 certificates nest about 7 levels deep
MAX_LENGTH_OCTETS = 4  # lengths up to 4 GiB; PEM keys and certificates are a few KiB

INTEGER = 0x02
BIT_STRING = 0x03
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31
VERSION = 0xA0  # [0] EXPLICIT, the first field of a version 2 or 3 certificate
TBS_TRAILING_TAGS = (0x81, 0x82, 0xA3)  # issuerUniqueID [1], subjectUniqueID [2], extensions [3]
_CONSTRUCTED = 0x20
_TAG_NAMES = {INTEGER: "INTEGER", BIT_STRING: "BIT STRING", NULL: "NULL", OBJECT_IDENTIFIER: "OBJECT IDENTIFIER",
              UTC_TIME: "UTCTime", GENERALIZED_TIME: "GeneralizedTime", SEQUENCE: "SEQUENCE", SET: "SET"}

# Directory string types and how to decode them: UTF8String, PrintableString, IA5String, T61String, BMPString.
_STRING_ENCODINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}

RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
COMMON_NAME = "2.5.4.3"

PUBLIC_KEY_LABEL = "PUBLIC KEY"
RSA_PUBLIC_KEY_LABEL = "RSA PUBLIC KEY"
CERTIFICATE_LABEL = "CERTIFICATE"


class DerError(ValueError):
    """PEM or DER input is malformed, or is not the kind of key or certificate expected."""


class Element(object):
    """One decoded TLV. ``encoding`` is the whole element, ``content`` its value; ``children`` lists the nested
    elements of a constructed type and is None for a primitive one."""

    __slots__ = ("tag", "encoding", "content", "children")

    def __init__(self, tag, encoding, content, children):
        self.tag = tag
        self.encoding = encoding
        self.content = content
        self.children = children


def parse(data, what="DER data"):
    """Decode ``data`` as exactly one DER element, nested elements included; nothing may follow it.
    ``what`` names the input in error messages."""
    if not isinstance(data, (bytes, bytearray)):
        raise DerError("{} must be bytes, not {}".format(what, type(data).__name__))
    data = bytes(data)
    element, end = _read_element(data, 0, len(data), 0, what)
    if end != len(data):
        raise DerError("{}: {} unexpected bytes after its end (byte {})".format(what, len(data) - end, end))
    return element


def _read_element(data, pos, limit, depth, what):
    """The element at ``data[pos:]``, which must end by ``limit``, and the offset after it."""
    if depth > MAX_DEPTH:
        raise DerError("{}: nested deeper than {} levels at byte {}".format(what, MAX_DEPTH, pos))
    if limit - pos < 2:
        raise DerError("{}: truncated: element at byte {} has no complete header".format(what, pos))
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DerError("{}: multi-byte tag at byte {} (not used in keys or certificates)".format(what, pos))
    first = data[pos + 1]
    header = 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError("{}: indefinite length at byte {} (not allowed in DER)".format(what, pos))
    else:
        count = first & 0x7F
        if count > MAX_LENGTH_OCTETS:
            raise DerError("{}: length field of {} bytes at byte {} is too large".format(what, count, pos))
        if limit - pos - 2 < count:
            raise DerError("{}: truncated: length field at byte {} is incomplete".format(what, pos))
        length_octets = data[pos + 2:pos + 2 + count]
        length = int.from_bytes(length_octets, "big")
        if length_octets[0] == 0 or length < 0x80:
            raise DerError("{}: non-minimal length encoding at byte {} (not allowed in DER)".format(what, pos))
        header += count
    start = pos + header
    end = start + length
    if end > limit:
        raise DerError("{}: element at byte {} claims {} bytes but only {} remain".format(
            what, pos, length, limit - start))
    children = None
    if tag & _CONSTRUCTED:
        children = []
        child_pos = start
        while child_pos < end:
            child, child_pos = _read_element(data, child_pos, end, depth + 1, what)
            children.append(child)
    return Element(tag, data[pos:end], data[start:end], children), end


def _tag_name(tag):
    return _TAG_NAMES.get(tag, "tag 0x{:02x}".format(tag))


def expect(element, tag, what):
    """``element`` if it has ``tag``, else a :class:`DerError` naming ``what`` was expected."""
    if element.tag != tag:
        raise DerError("{}: expected {}, found {}".format(what, _tag_name(tag), _tag_name(element.tag)))
    return element


def sequence(element, what, count=None, at_least=0):
    """The children of a SEQUENCE, checking their number (exactly ``count``, or at least ``at_least``)."""
    children = expect(element, SEQUENCE, what).children
    if count is not None and len(children) != count:
        raise DerError("{}: expected a SEQUENCE of {} elements, found {}".format(what, count, len(children)))
    if len(children) < at_least:
        raise DerError("{}: expected a SEQUENCE of at least {} elements, found {}".format(
            what, at_least, len(children)))
    return children


def read_integer(element, what):
    """The value of a minimally encoded INTEGER."""
    content = expect(element, INTEGER, what).content
    if not content:
        raise DerError("{}: empty INTEGER".format(what))
    if len(content) > 1 and ((content[0] == 0x00 and content[1] < 0x80) or
                             (content[0] == 0xFF and content[1] >= 0x80)):
        raise DerError("{}: INTEGER has redundant leading bytes (not allowed in DER)".format(what))
    return int.from_bytes(content, "big", signed=True)


def read_positive_integer(element, what):
    value = read_integer(element, what)
    if value <= 0:
        raise DerError("{}: must be positive, found {}".format(what, "zero" if value == 0 else "a negative number"))
    return value


def read_oid(element, what):
    """The dotted text form of an OBJECT IDENTIFIER."""
    content = expect(element, OBJECT_IDENTIFIER, what).content
    if not content or content[-1] & 0x80:
        raise DerError("{}: OBJECT IDENTIFIER is empty or its last sub-identifier is incomplete".format(what))
    arcs = []
    value = 0
    starting = True
    for byte in content:
        if starting and byte == 0x80:
            raise DerError("{}: OBJECT IDENTIFIER has a sub-identifier with a redundant leading byte".format(what))
        value = (value << 7) | (byte & 0x7F)
        starting = not byte & 0x80
        if starting:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first] + arcs[1:])


def read_bit_string(element, what):
    """The bytes of a BIT STRING that holds whole bytes (no unused bits), such as an encoded key."""
    content = expect(element, BIT_STRING, what).content
    if not content or content[0] != 0:
        raise DerError("{}: BIT STRING does not hold whole bytes".format(what))
    return content[1:]


def read_time(element, what):
    """A UTCTime (``YYMMDDHHMMSSZ``) or GeneralizedTime (``YYYYMMDDHHMMSSZ``) as a naive UTC datetime."""
    if element.tag not in (UTC_TIME, GENERALIZED_TIME):
        raise DerError("{}: expected UTCTime or GeneralizedTime, found {}".format(what, _tag_name(element.tag)))
    year_digits = 2 if element.tag == UTC_TIME else 4
    content = element.content
    digits = content[:-1]
    if len(content) != year_digits + 11 or content[-1:] != b"Z" or not all(0x30 <= b <= 0x39 for b in digits):
        raise DerError("{}: time {!r} is not in DER form ({}MMDDHHMMSSZ)".format(
            what, content, "YY" if year_digits == 2 else "YYYY"))
    year = int(digits[:year_digits])
    if year_digits == 2:
        year += 1900 if year >= 50 else 2000  # RFC 5280 §4.1.2.5.1
    fields = [int(digits[i:i + 2]) for i in range(year_digits, len(digits), 2)]
    try:
        return datetime.datetime(year, *fields)
    except ValueError:
        raise DerError("{}: time {!r} is not a valid date".format(what, content))


def read_string(element, what):
    """The text of a directory string (UTF8String, PrintableString, IA5String, T61String or BMPString)."""
    encoding = _STRING_ENCODINGS.get(element.tag)
    if encoding is None:
        raise DerError("{}: {} is not a supported string type".format(what, _tag_name(element.tag)))
    try:
        return element.content.decode(encoding)
    except UnicodeDecodeError:
        raise DerError("{}: string is not valid {}".format(what, encoding))


def pem_blocks(data):
    """Every PEM block of ``data`` as ``(label, DER bytes)``, in order. Text outside the blocks is ignored, as
    OpenSSL ignores it; inside a block only canonical base64 is accepted."""
    if not isinstance(data, bytes):
        raise DerError("PEM data must be bytes, not {}".format(type(data).__name__))
    blocks = []
    label = None
    for number, line in enumerate(data.decode("latin-1").split("\n"), 1):
        line = line.rstrip(" \t\r")
        if label is None:
            if line.startswith("-----BEGIN ") and line.endswith("-----") and len(line) > 16:
                label, first_line, lines = line[11:-5], number, []
        elif line == "-----END " + label + "-----":
            blocks.append((label, _decode_base64("".join(lines), label, first_line)))
            label = None
        elif line.startswith("-----"):
            raise DerError("PEM block '{}' from line {} ends with {!r}, not '-----END {}-----'".format(
                label, first_line, line, label))
        else:
            lines.append(line)
    if label is not None:
        raise DerError("PEM block '{}' from line {} has no '-----END {}-----' line".format(label, first_line, label))
    return blocks


def _decode_base64(text, label, first_line):
    encoded = text.encode("latin-1")
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DerError("PEM block '{}' from line {} is not valid base64: {}".format(label, first_line, exc))
    if base64.b64encode(decoded) != encoded:
        raise DerError("PEM block '{}' from line {} is not canonical base64".format(label, first_line))
    if not decoded:
        raise DerError("PEM block '{}' from line {} is empty".format(label, first_line))
    return decoded


def pem_decode(data, label):
    """The DER bytes of the first PEM block labelled ``label`` (as OpenSSL's PEM readers take the first)."""
    for block_label, der in pem_blocks(data):
        if block_label == label:
            return der
    raise DerError("no '-----BEGIN {}-----' block found".format(label))


def rsa_public_key_from_pkcs1(der, what="RSA public key"):
    """``(n, e)`` of a PKCS#1 RSAPublicKey: ``SEQUENCE { modulus INTEGER, publicExponent INTEGER }``."""
    modulus, exponent = sequence(parse(der, what), what, count=2)
    return read_positive_integer(modulus, what + " modulus"), read_positive_integer(exponent, what + " exponent")


def rsa_public_key_from_spki(der, what="public key"):
    """``(n, e)`` of a SubjectPublicKeyInfo holding an RSA key (algorithm rsaEncryption, parameters NULL)."""
    return _rsa_public_key_info(parse(der, what), what)


def _rsa_public_key_info(element, what):
    algorithm, key = sequence(element, what, count=2)
    algorithm_fields = sequence(algorithm, what + " algorithm", at_least=1)
    oid = read_oid(algorithm_fields[0], what + " algorithm")
    if oid != RSA_ENCRYPTION:
        raise DerError("{} is not an RSA key: its algorithm is {}, not rsaEncryption ({}); CernVM-FS keys are "
                       "RSA keys".format(what, oid, RSA_ENCRYPTION))
    parameters = algorithm_fields[1:]
    if len(parameters) != 1 or parameters[0].tag != NULL or parameters[0].content:
        raise DerError("{}: rsaEncryption parameters must be a single NULL".format(what))
    return rsa_public_key_from_pkcs1(read_bit_string(key, what + " key bits"), what)


def rsa_public_keys_from_pem(data):
    """``(n, e)`` of every ``PUBLIC KEY`` and ``RSA PUBLIC KEY`` block in ``data``; other blocks are ignored."""
    keys = []
    for label, der in pem_blocks(data):
        if label == PUBLIC_KEY_LABEL:
            keys.append(rsa_public_key_from_spki(der))
        elif label == RSA_PUBLIC_KEY_LABEL:
            keys.append(rsa_public_key_from_pkcs1(der))
    if not keys:
        raise DerError("no '-----BEGIN {}-----' or '-----BEGIN {}-----' block found".format(
            PUBLIC_KEY_LABEL, RSA_PUBLIC_KEY_LABEL))
    return keys


CertificateFields = collections.namedtuple(
    "CertificateFields", "der public_key common_name not_before not_after")
CertificateFields.__doc__ = """What the client reads from an X.509 certificate: its DER bytes (for fingerprints),
the subject's RSA key ``(n, e)``, the subject common name (None if it has none) and the validity period as naive
UTC datetimes."""


def read_certificate(der):
    """The :class:`CertificateFields` of a DER-encoded X.509 certificate. Its signature is not checked: CernVM-FS
    trusts a certificate through the whitelist, by fingerprint."""
    what = "certificate"
    tbs, signature_algorithm, signature = sequence(parse(der, what), what, count=3)
    expect(signature_algorithm, SEQUENCE, what + " signature algorithm")
    expect(signature, BIT_STRING, what + " signature")
    fields = sequence(tbs, what, at_least=6)
    if fields[0].tag == VERSION:
        fields = fields[1:]
    if len(fields) < 6:
        raise DerError("{}: too few fields (serial, algorithm, issuer, validity, subject, key)".format(what))
    serial, algorithm, issuer, validity, subject, key_info = fields[:6]
    expect(serial, INTEGER, what + " serial number")
    expect(algorithm, SEQUENCE, what + " algorithm")
    expect(issuer, SEQUENCE, what + " issuer")
    not_before, not_after = sequence(validity, what + " validity", count=2)
    for extra in fields[6:]:
        if extra.tag not in TBS_TRAILING_TAGS:
            raise DerError("{}: unexpected {} after the public key".format(what, _tag_name(extra.tag)))
    return CertificateFields(
        der=bytes(der),
        public_key=_rsa_public_key_info(key_info, what + " public key"),
        common_name=_common_name(subject, what + " subject"),
        not_before=read_time(not_before, what + " notBefore"),
        not_after=read_time(not_after, what + " notAfter"),
    )


def _common_name(name, what):
    """The first common name (CN) in a Name: ``SEQUENCE OF SET OF SEQUENCE { type OID, value }``."""
    for relative_name in expect(name, SEQUENCE, what).children:
        for attribute in expect(relative_name, SET, what).children:
            attribute_type, value = sequence(attribute, what + " attribute", count=2)
            if read_oid(attribute_type, what + " attribute type") == COMMON_NAME:
                return read_string(value, what + " common name")
    return None
