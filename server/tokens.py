"""Access tokens: EdDSA (Ed25519) JWTs, signing keys that rotate, and the JWKS.

Private keys are stored encrypted (AES-GCM with the key-encryption key from settings); the
JWKS publishes `next`, `active` and `retiring` keys, so a token signed by the previous key
keeps verifying until it expires (auth.md R1, R18).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import msgspec
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from server.db import Database, UTCDateTime, metadata
from server.errors import ApiError, Code
from server.ids import new_id
from server.secrets import b64url, b64url_decode, sha256

log = logging.getLogger("anilay.tokens")

ACCESS_TTL_S = 900
LEEWAY_S = 30
AUDIENCE = "anilay"
ROTATE_EVERY = timedelta(days=30)
NEXT_TO_ACTIVE = timedelta(hours=1)
RETIRING_TO_RETIRED = timedelta(seconds=ACCESS_TTL_S + 5 * 60)
PUBLISHED_STATES = ("next", "active", "retiring")
# Tokens whose signature this process has checked (an Ed25519 verify costs ~0.1 ms and every
# authenticated request and socket connect needs one): by digest, never the token itself.
VERIFIED_CACHE_SIZE = 10_000

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.LargeBinary(32), nullable=False),
    sa.Column("private_key_enc", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("activated_at", UTCDateTime, nullable=True),
    sa.Column("retired_at", UTCDateTime, nullable=True),
    sa.Index(
        "uq_signing_keys_one_active",
        "state",
        unique=True,
        postgresql_where=sa.text("state = 'active'"),
        sqlite_where=sa.text("state = 'active'"),
    ),
)


class AccessClaims(msgspec.Struct, frozen=True):
    user_id: int
    session_id: int
    role: str
    issued_at: int
    expires_at: int
    jti: str


def thumbprint(public_raw: bytes) -> str:
    """RFC 7638 JWK thumbprint of an Ed25519 key: the `kid`."""
    canonical = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": b64url(public_raw)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return b64url(sha256(canonical))


def load_key_encryption_key(configured: str | None, fallback_path: str) -> bytes:
    """The 32-byte key that encrypts signing keys at rest.

    From settings when given; else a file beside the embedded database, created on first
    start (an embedded install must work with no configuration).
    """
    if configured:
        key = b64url_decode(configured)
        if len(key) != 32:
            raise ValueError("ANILAY_KEY_ENCRYPTION_KEY must be 32 bytes, base64url")
        return key
    if os.path.exists(fallback_path):
        with open(fallback_path, "rb") as handle:
            return handle.read()
    os.makedirs(os.path.dirname(os.path.abspath(fallback_path)), exist_ok=True)
    key = AESGCM.generate_key(bit_length=256)
    descriptor = os.open(fallback_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    log.warning(
        "generated a key-encryption key at %s; set ANILAY_KEY_ENCRYPTION_KEY in production",
        fallback_path,
    )
    return key


class KeyRing:
    """The process's view of the signing keys, refreshed from the database."""

    def __init__(self, db: Database, kek: bytes, issuer: str) -> None:
        self.db = db
        self.issuer = issuer
        self._aead = AESGCM(kek)
        self._public: dict[str, Ed25519PublicKey] = {}
        self._rows: list[dict[str, Any]] = []
        self._active: tuple[str, Ed25519PrivateKey] | None = None
        self._verified: OrderedDict[bytes, tuple[str, AccessClaims]] = OrderedDict()
        self.loaded_at = 0.0

    # --- storage ------------------------------------------------------------------------
    def _seal(self, private: Ed25519PrivateKey, kid: str) -> bytes:
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, raw, kid.encode())

    def _open(self, sealed: bytes, kid: str) -> Ed25519PrivateKey:
        raw = self._aead.decrypt(sealed[:12], sealed[12:], kid.encode())
        return Ed25519PrivateKey.from_private_bytes(raw)

    async def create_key(self, state: str) -> str:
        private = Ed25519PrivateKey.generate()
        public_raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        kid = thumbprint(public_raw)
        now = datetime.now(UTC)
        await self.db.execute(
            signing_keys.insert().values(
                kid=kid,
                public_key=public_raw,
                private_key_enc=self._seal(private, kid),
                state=state,
                created_at=now,
                activated_at=now if state == "active" else None,
            )
        )
        return kid

    async def load(self) -> None:
        rows = await self.db.fetch_all(
            sa.select(signing_keys).where(signing_keys.c.state.in_(PUBLISHED_STATES))
        )
        public = {
            row["kid"]: Ed25519PublicKey.from_public_bytes(bytes(row["public_key"])) for row in rows
        }
        active = next((row for row in rows if row["state"] == "active"), None)
        self._active = (
            (active["kid"], self._open(bytes(active["private_key_enc"]), active["kid"]))
            if active
            else None
        )
        self._public = public
        self._rows = rows
        self.loaded_at = time.monotonic()

    async def ensure_active(self) -> None:
        """First start: create and activate a key. Two processes racing: the partial unique
        index lets one win; the other just loads the winner's key."""
        await self.load()
        if self._active is None:
            try:
                await self.create_key("active")
            except Exception:  # lost the race for the one active key
                log.info("another process created the first signing key")
            await self.load()

    # --- rotation (worker) ----------------------------------------------------------------
    async def rotate_step(self, now: datetime | None = None) -> None:
        """Advance scheduled rotation by what is due: create `next`, promote it, retire."""
        now = now or datetime.now(UTC)
        rows = await self.db.fetch_all(
            sa.select(signing_keys).where(signing_keys.c.state.in_(PUBLISHED_STATES))
        )
        by_state: dict[str, list[dict]] = {}
        for row in rows:
            by_state.setdefault(row["state"], []).append(row)
        active = (by_state.get("active") or [None])[0]
        upcoming = (by_state.get("next") or [None])[0]
        for retiring in by_state.get("retiring", []):
            # retired_at is stamped when a key stops being active (retiring since then).
            if (
                retiring["retired_at"] is None
                or now - retiring["retired_at"] >= RETIRING_TO_RETIRED
            ):
                await self.db.execute(
                    signing_keys.update()
                    .where(
                        signing_keys.c.kid == retiring["kid"], signing_keys.c.state == "retiring"
                    )
                    .values(state="retired")
                )
        if active is None:
            await self.ensure_active()
        elif (
            upcoming is None
            and now - (active["activated_at"] or active["created_at"])
            >= ROTATE_EVERY - NEXT_TO_ACTIVE
        ):
            await self.create_key("next")
        elif upcoming is not None and now - upcoming["created_at"] >= NEXT_TO_ACTIVE:
            await self.promote(upcoming["kid"], now)
        await self.load()

    async def promote(self, kid: str, now: datetime) -> None:
        async with self.db.transaction():
            await self.db.execute(
                signing_keys.update()
                .where(signing_keys.c.state == "active")
                .values(state="retiring", retired_at=now)
            )
            await self.db.execute(
                signing_keys.update()
                .where(signing_keys.c.kid == kid)
                .values(state="active", activated_at=now)
            )

    async def emergency_rotate(self) -> str:
        """Activate a fresh key now and retire every other: all access tokens die at once."""
        now = datetime.now(UTC)
        async with self.db.transaction():
            await self.db.execute(
                signing_keys.update()
                .where(signing_keys.c.state.in_(PUBLISHED_STATES))
                .values(state="retired", retired_at=now)
            )
            kid = await self.create_key("active")
        await self.load()
        return kid

    # --- tokens ---------------------------------------------------------------------------
    def issue(self, user_id: int, session_id: int, role: str, now: float | None = None) -> str:
        if self._active is None:
            raise ApiError(Code.unavailable, "No signing key is active")
        kid, private = self._active
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "sid": str(session_id),
            "role": role,
            "iat": issued,
            "exp": issued + ACCESS_TTL_S,
            "jti": str(new_id()),
        }
        return jwt.encode(claims, private, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"})

    def verify(self, token: str) -> AccessClaims:
        """Check signature, algorithm, key, issuer, audience and expiry (30 s leeway).

        A token checked before is answered from memory while its key is still published
        (a retired or emergency-rotated key ends it at once) and it has not expired."""
        digest = hashlib.blake2b(token.encode(), digest_size=32).digest()
        known = self._verified.get(digest)
        if known is not None:
            kid, claims = known
            if kid in self._public and time.time() < claims.expires_at + LEEWAY_S:
                self._verified.move_to_end(digest)
                return claims
            del self._verified[digest]
        kid, claims = self._check(token)
        self._verified[digest] = (kid, claims)
        while len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def _check(self, token: str) -> tuple[str, AccessClaims]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid_token() from None
        kid = header.get("kid", "")
        key = self._public.get(kid)
        if header.get("alg") != "EdDSA" or key is None:
            raise _invalid_token()
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "sid", "jti", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(
                Code.token_expired,
                "The access token has expired; refresh it",
                headers=_WWW_AUTHENTICATE,
            ) from None
        except jwt.InvalidTokenError:
            raise _invalid_token() from None
        try:
            return kid, AccessClaims(
                user_id=int(claims["sub"]),
                session_id=int(claims["sid"]),
                role=str(claims.get("role", "user")),
                issued_at=claims["iat"],
                expires_at=claims["exp"],
                jti=str(claims["jti"]),
            )
        except (TypeError, ValueError):
            raise _invalid_token() from None

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Public keys only (never `d`), in a stable order."""
        keys = [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url(bytes(row["public_key"])),
                "kid": row["kid"],
                "use": "sig",
                "alg": "EdDSA",
            }
            for row in sorted(self._rows, key=lambda r: (r["created_at"], r["kid"]))
        ]
        return {"keys": keys}

    @property
    def active_kid(self) -> str | None:
        return self._active[0] if self._active else None


_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _invalid_token() -> ApiError:
    return ApiError(Code.invalid_token, "The access token is not valid", headers=_WWW_AUTHENTICATE)
