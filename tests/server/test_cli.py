"""Operator commands: demo data, the first admin, emergency key rotation."""

from __future__ import annotations

import sqlalchemy as sa

from models.anime.importer import demo_records
from models.auth.bootstrap import create_admin_account
from models.demo import DEMO_USERS, seed_demo
from models.users import users
from server.cli import main


async def test_seed_is_idempotent(live):
    first = await seed_demo(live.settings)
    second = await seed_demo(live.settings)
    assert first == {"accounts": len(DEMO_USERS), "anime": len(demo_records())}
    assert second == {"accounts": 0, "anime": 0}


async def test_create_admin_creates_then_promotes(live, client):
    from tests.factories import register

    user_id = await create_admin_account(
        live.settings, "operator", "op@example.com", "a long operator passphrase"
    )
    row = await live.services.db.fetch_one(sa.select(users).where(users.c.id == user_id))
    assert row["role"] == "admin" and row["email_verified_at"] is not None
    account = await register(client)
    promoted = await create_admin_account(live.settings, account.username, account.email, "x")
    assert promoted == account.id
    assert (
        await live.services.db.fetch_val(sa.select(users.c.role).where(users.c.id == account.id))
        == "admin"
    )


def test_bad_settings_exit_with_a_message(monkeypatch, capsys):
    import pytest

    monkeypatch.setenv("ANILAY_PORT", "eighty")
    with pytest.raises(SystemExit) as exit_info:
        main(["migrate"])
    assert exit_info.value.code == 2
    assert "ANILAY_PORT" in capsys.readouterr().err
