"""API keys (auth.md K1–K6). Bot keys cannot manage keys; other users' keys are 404."""

from __future__ import annotations

from typing import Annotated

import msgspec

from models import api_keys
from models.api_keys import ApiKey, ApiKeyWithSecret
from server.errors import Code
from server.http import Call, endpoint
from server.schemas import Schema

KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Scopes = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=64)]],
    msgspec.Meta(min_length=1, max_length=api_keys.MAX_SCOPES),
]

NO_STORE = {"Cache-Control": "no-store"}


class ApiKeyList(msgspec.Struct):
    items: list[ApiKey]


class CreateKeyBody(Schema):
    name: KeyName
    scopes: Scopes
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=365)] | None = None


class UpdateKeyBody(Schema):
    name: KeyName | None = None
    scopes: Scopes | None = None


class RotateKeyBody(Schema):
    grace_seconds: Annotated[int, msgspec.Meta(ge=0, le=api_keys.MAX_GRACE_S)] = 0


@endpoint("GET", "/api-keys", response=ApiKeyList, auth="user")
async def list_api_keys(call: Call) -> ApiKeyList:
    """List my API keys (never their secrets)."""
    rows = await api_keys.list_keys(call.services, call.user.user_id)
    return ApiKeyList(items=[api_keys.key_view(row) for row in rows])


@endpoint(
    "POST",
    "/api-keys",
    body=CreateKeyBody,
    response=ApiKeyWithSecret,
    status=201,
    auth="user",
    errors=[Code.api_key_limit, Code.name_taken, Code.email_unverified, Code.rate_limited],
)
async def create_api_key(call: Call[CreateKeyBody, None]) -> ApiKeyWithSecret:
    """Create a key; its secret is shown this once."""
    call.headers.update(NO_STORE)
    return await api_keys.do_create_key(
        call.services,
        call.user.user_id,
        name=call.body.name,
        scopes=call.body.scopes,
        expires_in_days=call.body.expires_in_days,
    )


@endpoint("GET", "/api-keys/{key_id}", response=ApiKey, auth="user", errors=[Code.not_found])
async def get_api_key(call: Call) -> ApiKey:
    """One of my keys."""
    row = await api_keys.access_key(call.services, call.user.user_id, call.path_id("key_id"))
    return api_keys.key_view(row)


@endpoint(
    "PATCH",
    "/api-keys/{key_id}",
    body=UpdateKeyBody,
    response=ApiKey,
    auth="user",
    errors=[Code.not_found, Code.name_taken],
)
async def update_api_key(call: Call[UpdateKeyBody, None]) -> ApiKey:
    """Rename a key or change its scopes."""
    return await api_keys.do_update_key(
        call.services,
        call.user.user_id,
        call.path_id("key_id"),
        name=call.body.name,
        scopes=call.body.scopes,
    )


@endpoint(
    "POST",
    "/api-keys/{key_id}/rotate",
    body=RotateKeyBody,
    body_optional=True,
    response=ApiKeyWithSecret,
    auth="user",
    errors=[Code.not_found, Code.rate_limited],
)
async def rotate_api_key(call: Call[RotateKeyBody | None, None]) -> ApiKeyWithSecret:
    """A new secret for a key, optionally keeping the old one valid for a grace period."""
    grace = call.body.grace_seconds if call.body is not None else 0
    call.headers.update(NO_STORE)
    return await api_keys.do_rotate_key(
        call.services, call.user.user_id, call.path_id("key_id"), grace
    )


@endpoint("DELETE", "/api-keys/{key_id}", status=204, auth="user", errors=[Code.not_found])
async def revoke_api_key(call: Call) -> None:
    """Revoke a key now."""
    await api_keys.do_revoke_key(call.services, call.user.user_id, call.path_id("key_id"))


routes = [
    list_api_keys,
    create_api_key,
    get_api_key,
    update_api_key,
    rotate_api_key,
    revoke_api_key,
]
