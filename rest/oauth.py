"""Sign-in with other sites: providers, the authorization-code flow, linked identities
(auth.md E16-E21)."""

from __future__ import annotations

import html
from typing import Annotated, Literal

import msgspec
from starlette.responses import HTMLResponse, RedirectResponse, Response

from models import oauth
from models.auth.accounts import ClientInfo
from models.auth.shapes import OAuthTokenPair
from server.errors import ApiError, Code
from server.http import Call, endpoint
from server.schemas import Schema

Base64Url = r"^[A-Za-z0-9_-]+$"
# RFC 7636 §4.1: the verifier's unreserved characters.
VerifierChars = r"^[A-Za-z0-9._~-]+$"
ProviderId = Annotated[str, msgspec.Meta(max_length=32)]

NO_STORE = {"Cache-Control": "no-store"}
CALLBACK_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


# --- E16 providers ------------------------------------------------------------------------


class ProviderList(msgspec.Struct):
    items: list[oauth.ProviderItem]


@endpoint(
    "GET",
    "/auth/oauth/providers",
    response=ProviderList,
    response_headers=["Cache-Control"],
)
async def oauth_providers(call: Call) -> ProviderList:
    """The sign-in providers that are configured and enabled."""
    call.headers["Cache-Control"] = "public, max-age=300"
    return ProviderList(items=oauth.list_providers(call.services))


# --- E17 start ----------------------------------------------------------------------------


class StartBody(Schema):
    intent: Literal["login", "link", "reauth"]
    redirect_uri: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    code_challenge: Annotated[str, msgspec.Meta(min_length=43, max_length=128, pattern=Base64Url)]
    code_challenge_method: Literal["S256"]
    client_state: Annotated[str, msgspec.Meta(max_length=256)] | None = None


@endpoint(
    "POST",
    "/auth/oauth/{provider}/start",
    body=StartBody,
    response=oauth.StartedFlow,
    auth="optional",
    errors=[
        Code.provider_not_found,
        Code.redirect_uri_not_allowed,
        Code.unauthorized,
        Code.rate_limited,
    ],
)
async def oauth_start(call: Call[StartBody, None]) -> oauth.StartedFlow:
    """Begin an authorization-code flow: sign in, link a provider, or confirm it is you.

    `link` and `reauth` need a bearer token. The client keeps the PKCE verifier of
    `code_challenge` and presents it at the exchange."""
    await call.services.limiter.check("20/minute", "oauth-start", call.client_ip)
    body = call.body
    call.headers.update(NO_STORE)
    return await oauth.do_start_flow(
        call.services,
        call.identity,
        provider_id=call.request.path_params["provider"],
        intent=body.intent,
        redirect_uri=body.redirect_uri,
        code_challenge=body.code_challenge,
        client_state=body.client_state,
    )


# --- E18 callback -------------------------------------------------------------------------


class CallbackQuery(msgspec.Struct, kw_only=True):
    """What providers send back. Not a strict Schema: providers add parameters of their own
    (`scope`, `authuser`, ...), which are ignored."""

    code: str | None = None
    state: str | None = None
    error: str | None = None
    error_description: str | None = None
    iss: str | None = None


_INVALID_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in link not valid</title></head>
<body><h1>This sign-in link is not valid</h1>
<p>It has expired, was already used, or did not come from this sign-in.
Go back to Anilay and start again.</p>
<p lang="ru">Ссылка для входа недействительна. Вернитесь в Anilay и начните заново.</p>
<!-- {reason} -->
</body></html>
"""


@endpoint(
    "GET",
    "/auth/oauth/{provider}/callback",
    query=CallbackQuery,
    status=302,
    media_type="text/html",
    response_headers=["Location", "Cache-Control", "Referrer-Policy"],
)
async def oauth_callback(call: Call[None, CallbackQuery]) -> Response:
    """Where the provider sends the browser back; redirects to the client's redirect URI.

    With `?code=…&state=<client_state>` on success, or `?error=access_denied|provider_error|
    server_error&state=…`. A missing, unknown, expired, used or foreign `state` gets a small
    HTML page with status 400 and no redirect."""
    query = call.query
    try:
        location = await oauth.do_callback(
            call.services,
            call.request.path_params["provider"],
            state=query.state,
            code=query.code,
            error=query.error,
            iss=query.iss,
        )
    except oauth.InvalidCallback as invalid:
        page = _INVALID_PAGE.replace("{reason}", html.escape(str(invalid)))
        return HTMLResponse(page, status_code=400, headers=CALLBACK_HEADERS)
    return RedirectResponse(location, status_code=302, headers=CALLBACK_HEADERS)


# --- E19 exchange -------------------------------------------------------------------------


class ExchangeBody(Schema):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    code_verifier: Annotated[
        str, msgspec.Meta(min_length=43, max_length=128, pattern=VerifierChars)
    ]
    # Stored on the session a login opens, as at /auth/login.
    client: Literal["web", "ios", "android", "other"] = "other"
    device_name: Annotated[str, msgspec.Meta(max_length=64)] | None = None


@endpoint(
    "POST",
    "/auth/oauth/exchange",
    body=ExchangeBody,
    response=OAuthTokenPair,  # for `login`; `link` and `reauth` are described below
    auth="optional",
    errors=[
        Code.invalid_oauth_code,
        Code.unauthorized,
        Code.identity_mismatch,
        Code.identity_in_use,
        Code.provider_already_linked,
        Code.oauth_email_conflict,
        Code.registration_closed,
        Code.rate_limited,
    ],
)
async def oauth_exchange(call: Call[ExchangeBody, None]) -> Response | msgspec.Struct:
    """Redeem the one-time result code with the PKCE verifier.

    `login`: tokens and whether the account was `created`. `link` (bearer): 200
    `{"identity": {"provider", "username", "created_at"}}`. `reauth` (bearer): 204, and the
    session counts as freshly authenticated."""
    await call.services.limiter.check("20/minute", "oauth-exchange", call.client_ip)
    body = call.body
    result = await oauth.do_exchange(
        call.services,
        call.identity,
        code=body.code,
        code_verifier=body.code_verifier,
        client=ClientInfo(
            client=body.client,
            device_name=body.device_name,
            user_agent=call.user_agent,
            ip=call.client_ip,
        ),
    )
    if result is None:
        return Response(status_code=204, headers=NO_STORE)
    call.headers.update(NO_STORE)
    return result


# --- E20 identities, E21 unlink -----------------------------------------------------------


class IdentityList(msgspec.Struct):
    items: list[oauth.IdentityItem]


@endpoint("GET", "/auth/oauth/identities", response=IdentityList, auth="user")
async def oauth_identities(call: Call) -> IdentityList:
    """The provider accounts linked to mine."""
    return IdentityList(items=await oauth.list_identities(call.services, call.user.user_id))


@endpoint(
    "DELETE",
    "/auth/oauth/identities/{provider}",
    status=204,
    auth="user",
    errors=[Code.not_found, Code.last_login_method],
)
async def oauth_unlink(call: Call) -> None:
    """Unlink a provider (not the last way into a password-less account)."""
    provider: str = call.request.path_params["provider"]
    if len(provider) > 32:
        raise ApiError(Code.not_found, "No such linked provider")
    await oauth.do_unlink(call.services, call.user.user_id, provider)


routes = [
    oauth_providers,
    oauth_start,
    oauth_callback,
    oauth_exchange,
    oauth_identities,
    oauth_unlink,
]
