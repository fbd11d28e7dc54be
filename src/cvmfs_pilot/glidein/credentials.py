"""The credential a pilot carries: a bearer token (WLCG/SciTokens JWT) or an X.509 proxy, sent with the job by
the batch system. It is kept 0600 in the work directory, named to the payload by ``BEARER_TOKEN_FILE`` or
``X509_USER_PROXY``, never logged, checked for expiry, and removed with the work directory."""

import base64
import json
import os
import re
import shutil
import subprocess
import time

BEARER, X509 = "bearer token", "X.509 proxy"
JWT = re.compile(rb"^\s*[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\s*$")


class Credential(object):
    def __init__(self, path, kind, expires):
        self.path = path
        self.kind = kind
        self.expires = expires  # epoch seconds, or None when unknown

    def environment(self):
        return {"BEARER_TOKEN_FILE" if self.kind == BEARER else "X509_USER_PROXY": self.path}

    def describe(self, deadline):
        """A line for the report (never the credential itself); says whether it expires before deadline."""
        if self.expires is None:
            return "{} (expiry unknown)".format(self.kind)
        left = self.expires - time.time()
        note = "" if deadline is None or self.expires >= deadline else "; WARNING: it expires before the pilot's end"
        return "{} expiring in {:.0f} s{}".format(self.kind, left, note)


def _jwt_expiry(data):
    payload = data.strip().split(b".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the bearer token's payload is not JSON")
    expires = claims.get("exp") if isinstance(claims, dict) else None
    return float(expires) if isinstance(expires, (int, float)) else None


def _x509_expiry(path):
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    result = subprocess.run([openssl, "x509", "-noout", "-enddate", "-in", path], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, universal_newlines=True)
    text = result.stdout.strip().partition("=")[2]
    try:
        return time.mktime(time.strptime(text, "%b %d %H:%M:%S %Y %Z")) - time.timezone
    except ValueError:
        return None


def take(source, directory):
    """Copy the credential at source into directory (0600) and identify it; ValueError if it is neither kind."""
    with open(source, "rb") as handle:
        data = handle.read()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if JWT.match(data):
        kind, name = BEARER, "bearer_token"
    elif b"-----BEGIN CERTIFICATE-----" in data:
        kind, name = X509, "x509_proxy"
    else:
        raise ValueError("the credential {} is neither a bearer token (JWT) nor an X.509 proxy (PEM)".format(
            source))
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    expires = _jwt_expiry(data) if kind == BEARER else _x509_expiry(path)
    return Credential(path, kind, expires)
