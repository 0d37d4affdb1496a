"""Expo push tokens (auth.md P1–P4). Bot keys are refused on every route."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from starlette.responses import Response

from models import push
from models.push import PushTestResult, PushTokenView
from server.errors import ApiError, Code
from server.http import Call, endpoint
from server.ids import parse_snowflake
from server.schemas import Schema


class PushTokenList(msgspec.Struct):
    items: list[PushTokenView]


class RegisterTokenBody(Schema):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    platform: Literal["ios", "android"]
    device_name: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    app_version: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class PushTestBody(Schema):
    token_id: Annotated[str, msgspec.Meta(max_length=20)] | None = None


class PushTestResults(msgspec.Struct):
    results: list[PushTestResult]


_encoder = msgspec.json.Encoder()


@endpoint("GET", "/push/tokens", response=PushTokenList, auth="user")
async def list_push_tokens(call: Call) -> PushTokenList:
    """My registered devices."""
    rows = await push.list_tokens(call.services, call.user.user_id)
    return PushTokenList(items=[push.token_view(row, call.user.session_id) for row in rows])


@endpoint(
    "POST",
    "/push/tokens",
    body=RegisterTokenBody,
    response=PushTokenView,
    status=201,
    auth="user",
    errors=[Code.invalid_push_token, Code.rate_limited],
)
async def register_push_token(call: Call[RegisterTokenBody, None]) -> Response:
    """Register this device's Expo token (201 when new, 200 when already known)."""
    body = call.body
    row, created = await push.do_register_token(
        call.services,
        call.user,
        token=body.token,
        platform=body.platform,
        device_name=body.device_name,
        app_version=body.app_version,
    )
    view = push.token_view(row, call.user.session_id)
    return Response(
        _encoder.encode(view), status_code=201 if created else 200, media_type="application/json"
    )


@endpoint("DELETE", "/push/tokens/{token_id}", status=204, auth="user", errors=[Code.not_found])
async def unregister_push_token(call: Call) -> None:
    """Unregister a device."""
    await push.do_unregister_token(call.services, call.user.user_id, call.path_id("token_id"))


@endpoint(
    "POST",
    "/push/test",
    body=PushTestBody,
    body_optional=True,
    response=PushTestResults,
    auth="user",
    errors=[Code.not_found, Code.no_push_tokens, Code.rate_limited, Code.push_unavailable],
)
async def send_test_push(call: Call[PushTestBody | None, None]) -> PushTestResults:
    """Send a test push to my devices now."""
    token_id = None
    if call.body is not None and call.body.token_id is not None:
        token_id = parse_snowflake(call.body.token_id)
        if token_id is None:  # a malformed id names no token, like a missing one
            raise ApiError(Code.not_found, "No such push token")
    results = await push.do_test_push(call.services, call.user.user_id, token_id)
    return PushTestResults(results=results)


routes = [list_push_tokens, register_push_token, unregister_push_token, send_test_push]
