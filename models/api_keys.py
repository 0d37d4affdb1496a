"""API keys for bots (auth.md K1–K6, R21–R26). The key routes arrive with their own work;
until then no Bot credential can be valid."""

from __future__ import annotations

from starlette.requests import Request

from server.auth import Identity
from server.errors import ApiError, Code
from server.services import Services


async def identify_bot(services: Services, key: str, request: Request) -> Identity:
    raise ApiError(Code.invalid_api_key, "The API key is not valid")


async def describe_key(services: Services, key_id: int) -> dict | None:
    """{"id", "name", "scopes"} for E6."""
    return None
