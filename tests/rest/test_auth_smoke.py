"""A first pass through sign-up and sign-in (auth.md E1, E2, E6)."""

from __future__ import annotations

from tests.factories import login, register


async def test_register_then_me_then_login(client):
    account = await register(client)
    me = await client.get("/auth/me", headers=account.headers)
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == account.username
    again = await login(client, account)
    assert again.session_id != account.session_id
