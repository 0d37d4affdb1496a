"""Password hashing: argon2id at OWASP's baseline, off the event loop, in a bounded pool.

A verification always runs exactly once per login attempt, against a dummy hash when there
is no account, so timing does not reveal whether an account exists (auth.md R4).
"""

from __future__ import annotations

import asyncio
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.settings import Settings

MIN_LENGTH = 8
MAX_LENGTH = 128


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # Each hash holds memory_cost KiB while it runs: never more at once than cores.
        self._pool = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1, thread_name_prefix="argon2"
        )
        self._dummy = self._hasher.hash("dummy password for timing equality")
        self.verifications = 0  # counted so tests can prove one verification per attempt

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self._hasher.hash, normalize_password(password)
        )

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when `password` matches; with no stored hash, burns the same time and fails."""
        candidate = normalize_password(password)
        target = stored_hash or self._dummy
        loop = asyncio.get_running_loop()
        self.verifications += 1
        try:
            matched = await loop.run_in_executor(self._pool, self._hasher.verify, target, candidate)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return matched and stored_hash is not None

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
