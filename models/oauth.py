"""Linked OAuth identities (auth.md oauth_identities). The OAuth flow arrives with its own
work; until then an account has none."""

from __future__ import annotations

from server.services import Services


async def linked_providers(services: Services, user_id: int) -> list[str]:
    return []


async def identity_summaries(services: Services, user_id: int) -> list[dict[str, str]]:
    """[{"provider", "username"}] for E6."""
    return []
