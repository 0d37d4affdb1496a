"""Test factories that go through the real API and the real operations (STYLE habit 9)."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import sqlalchemy as sa

from models.auth.identity import forget_user_state
from models.mail import mail_outbox
from models.users import users
from server.services import Services

PASSWORD = "correct horse battery staple"
_serial = itertools.count(1)


@dataclass
class Account:
    id: int
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str
    session_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_serial)}x{datetime.now(UTC).microsecond}"


async def register(
    client: httpx.AsyncClient,
    username: str | None = None,
    password: str = PASSWORD,
    email: str | None = None,
    **extra,
) -> Account:
    username = username or unique_name()
    email = email or f"{username.lower()}@example.com"
    response = await client.post(
        "/auth/register",
        json={
            "username": username,
            "email": email,
            "password": password,
            "accept_terms": True,
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(
        id=int(body["user"]["id"]),
        username=username,
        email=email,
        password=password,
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        session_id=int(body["session_id"]),
    )


async def login(http: httpx.AsyncClient, account: Account, **extra) -> Account:
    """Sign in again; `extra` goes into the body (e.g. client="ios")."""
    response = await http.post(
        "/auth/login", json={"login": account.username, "password": account.password, **extra}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(
        id=account.id,
        username=account.username,
        email=account.email,
        password=account.password,
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        session_id=int(body["session_id"]),
    )


async def set_user(services: Services, user_id: int, **values) -> None:
    """Change account columns as the admin domain would, dropping the cached state."""
    await services.db.execute(users.update().where(users.c.id == user_id).values(**values))
    await forget_user_state(services, user_id)


async def ban(services: Services, user_id: int, days: int = 7, reason: str = "spam") -> None:
    """Ban as the admin group does: the next request and open sockets see it."""
    from models.auth.restrictions import do_set_ban

    await do_set_ban(services, user_id, datetime.now(UTC) + timedelta(days=days), reason)


async def make_staff(services: Services, user_id: int, role: str = "admin") -> None:
    await set_user(services, user_id, role=role)


async def mails_to(services: Services, address: str, template: str | None = None) -> list[dict]:
    query = sa.select(mail_outbox).where(mail_outbox.c.to_address == address)
    if template:
        query = query.where(mail_outbox.c.template == template)
    return await services.db.fetch_all(query.order_by(mail_outbox.c.created_at, mail_outbox.c.id))


def token_in(mail: dict) -> str:
    match = re.search(r"#token=([A-Za-z0-9_-]+)", mail["body"])
    assert match, mail["body"]
    return match.group(1)


async def inside_one_window(window_s: float, needed_s: float = 10.0) -> None:
    """Wait, if need be, until the current rate-limit window has `needed_s` left.

    The limiter (`limits`' sliding window counter) keeps epoch-aligned windows and, just
    after a boundary, weights the previous window's count by the fraction still covered, so
    a burst that straddles a boundary can get one request more than the limit. A test that
    counts a burst up to the limit exactly starts inside one window."""
    left = window_s - time.time() % window_s
    if left < needed_s:
        await asyncio.sleep(left + 0.05)


PATH_PARAM = re.compile(r"\{([a-z_]+)(?::[a-z]+)?\}")
PLACEHOLDERS = {"provider": "fake", "slot": "frame", "username": "nobody_here"}


def concrete(path: str, overrides: dict[str, str] | None = None) -> str:
    """A syntactically valid path for a route template (ids that name nothing); `overrides`
    puts given (percent-encoded) values in named parameters instead."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if overrides and name in overrides:
            return quote(overrides[name], safe="")
        if name in PLACEHOLDERS:
            return PLACEHOLDERS[name]
        return "abc123" if name in ("ref", "slug", "name") else "123456789"

    return "/api/v1" + PATH_PARAM.sub(fill, path)
