"""Random secrets and their stored form: high-entropy tokens are kept only as SHA-256."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets


def random_token(nbytes: int = 32) -> str:
    """URL-safe base64 without padding (43 chars for 32 bytes)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).rstrip(b"=").decode()


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
