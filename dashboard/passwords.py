"""Password hashes of dashboard users: scrypt (stdlib ``hashlib.scrypt``) with a per-user random salt.

A hash is one self-describing string, so the cost can grow later without breaking stored ones::

    scrypt$131072$8$1$<salt, base64>$<key, base64>

Make one with ``cityops dashboard hash-password`` and put it in ``CITYOPS_DASHBOARD__USERS``.

>>> stored = hash_password("correct horse")
>>> verify_password("correct horse", stored), verify_password("wrong", stored)
(True, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets

logger = logging.getLogger(__name__)

SCHEME = "scrypt"
N, R, P = 2**17, 8, 1
"""scrypt cost of new hashes: OWASP's recommended minimum (128 MiB, about 0.4 s per check on this
hardware). Stored hashes carry their own cost, so raising it never breaks an existing login."""
SALT_BYTES = 16
KEY_BYTES = 32
MAX_PASSWORD_BYTES = 1024


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=KEY_BYTES
    )


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P) -> str:
    """A new salted scrypt hash of ``password``.

    Raises:
        ValueError: for an empty or overlong password.
    """
    if not password or len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password must have 1 to {MAX_PASSWORD_BYTES} bytes")
    salt = secrets.token_bytes(SALT_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(_derive(password, salt, n, r, p))}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` hash; False for a wrong password or a malformed hash."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != SCHEME:
            raise ValueError(f"unknown scheme {scheme!r}")
        if not (2 <= int(n) <= 2**20 and 1 <= int(r) <= 32 and 1 <= int(p) <= 16):
            raise ValueError(f"scrypt cost n={n} r={r} p={p} is out of range")
        expected = base64.b64decode(key, validate=True)
        derived = _derive(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, TypeError) as exc:  # a malformed hash in the configuration: refuse, and say so in the log
        logger.error("dashboard password hash malformed error=%s", exc)
        return False
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        return False
    return hmac.compare_digest(derived, expected)
