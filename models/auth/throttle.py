"""Login throttling and lockout (auth.md R5).

Counters are keyed by the submitted identifier (lowercased), never by account, so locks
happen alike for existing and missing accounts. All checks run before any hashing.
- per IP: 20 attempts / 10 min → 429 rate_limited
- per (IP, identifier): 5 consecutive failures → blocked 15 min → 429 login_locked
- per identifier, all IPs: 20 failures / 1 h → locked 1 h, doubling per further lock
  within 24 h, capped at 24 h; the first lock emails the owner.
"""

from __future__ import annotations

import time

from server.errors import ApiError, Code
from server.services import Services

IP_RULE = "20/10 minutes"
PAIR_FAILURES = "5/15 minutes"
PAIR_LOCK_S = 15 * 60
IDENTIFIER_FAILURES = "20/hour"
IDENTIFIER_LOCK_S = 3600
IDENTIFIER_LOCK_CAP_S = 24 * 3600
LOCK_HISTORY_S = 24 * 3600


def _pair_lock(ip: str, identifier: str) -> str:
    return f"login:lock:pair:{ip}:{identifier}"


def _identifier_lock(identifier: str) -> str:
    return f"login:lock:id:{identifier}"


async def check_login_allowed(services: Services, ip: str, identifier: str) -> None:
    await services.limiter.check(IP_RULE, "login-ip", ip)
    for key in (_pair_lock(ip, identifier), _identifier_lock(identifier)):
        until = await services.cache.get(key)
        if until is not None:
            retry = max(1, int(float(until) - time.time()))
            raise ApiError(
                Code.login_locked,
                "Too many failed sign-ins; try again later",
                headers={"Retry-After": str(retry)},
            )


async def record_failure(services: Services, ip: str, identifier: str) -> bool:
    """Count a failed login; returns True when this failure started an identifier lock."""
    pair = await services.limiter.hit(PAIR_FAILURES, "login-fail-pair", ip, identifier)
    if pair.remaining == 0:
        await _lock(services, _pair_lock(ip, identifier), PAIR_LOCK_S)
    overall = await services.limiter.hit(IDENTIFIER_FAILURES, "login-fail-id", identifier)
    if overall.remaining > 0:
        return False
    history_key = f"login:locks:{identifier}"
    previous = int(await services.cache.get(history_key) or 0)
    duration = min(IDENTIFIER_LOCK_S * 2**previous, IDENTIFIER_LOCK_CAP_S)
    await services.cache.set(history_key, str(previous + 1).encode(), LOCK_HISTORY_S)
    await _lock(services, _identifier_lock(identifier), duration)
    await services.limiter.clear(IDENTIFIER_FAILURES, "login-fail-id", identifier)
    return previous == 0


async def record_success(services: Services, ip: str, identifier: str) -> None:
    await services.limiter.clear(PAIR_FAILURES, "login-fail-pair", ip, identifier)


async def clear_identifier(services: Services, identifier: str) -> None:
    """A password reset lifts every lock and counter on the account's identifiers."""
    identifier = identifier.lower()
    await services.cache.delete(_identifier_lock(identifier), f"login:locks:{identifier}")
    await services.limiter.clear(IDENTIFIER_FAILURES, "login-fail-id", identifier)


async def _lock(services: Services, key: str, seconds: int) -> None:
    await services.cache.set(key, str(time.time() + seconds).encode(), seconds)
