"""The authorization-code flow: start (E17), the provider's callback (E18) and the
exchange of the one-time result code (E19); auth.md R14, R15."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

import msgspec
import sqlalchemy as sa

from models.auth.accounts import ClientInfo
from models.auth.shapes import OAuthTokenPair
from models.oauth.identities import LinkResult, link_identity, login_with, reauth_with
from models.oauth.tables import oauth_flows
from server.auth import Identity
from server.errors import ApiError, Code, FieldError
from server.events import rfc3339
from server.ids import new_id
from server.oauth_providers import Profile, ProviderError, registry_of
from server.secrets import b64url, random_token, same_digest, sha256
from server.services import Services
from server.settings import Settings

log = logging.getLogger("anilay.oauth")

FLOW_TTL = timedelta(minutes=10)
RESULT_TTL = timedelta(seconds=60)
PURGE_AFTER = timedelta(days=1)
API_PREFIX = "/api/v1"
MAX_PROVIDER_CODE = 2048
Intent = Literal["login", "link", "reauth"]
CallbackError = Literal["access_denied", "provider_error", "server_error"]


class ProviderItem(msgspec.Struct):
    id: str
    name: str
    icon_url: str | None


class StartedFlow(msgspec.Struct):
    authorize_url: str
    expires_at: str


class InvalidCallback(Exception):
    """The callback's state cannot be trusted: answer 400 without redirecting (R14)."""


def list_providers(services: Services) -> list[ProviderItem]:
    """E16 (and the derived public setting `oauth_providers`)."""
    return [
        ProviderItem(id=p.id, name=p.name, icon_url=p.icon_url)
        for p in registry_of(services).enabled()
    ]


def callback_url(settings: Settings, provider_id: str) -> str:
    """The one URI registered at the provider (R15)."""
    return f"{settings.public_url}{API_PREFIX}/auth/oauth/{provider_id}/callback"


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


# --- E17 start ----------------------------------------------------------------------------


def check_redirect_uri(settings: Settings, redirect_uri: str) -> None:
    """R15: exact string match against the allow-list; no prefixes, no wildcards."""
    if redirect_uri not in settings.oauth_redirect_uris:
        raise ApiError(
            Code.redirect_uri_not_allowed,
            "That redirect URI is not on the allow-list",
            errors=[FieldError("redirect_uri", "not an allowed redirect URI")],
        )


async def do_start_flow(
    services: Services,
    identity: Identity | None,
    *,
    provider_id: str,
    intent: Intent,
    redirect_uri: str,
    code_challenge: str,
    client_state: str | None,
) -> StartedFlow:
    provider = registry_of(services).get(provider_id)
    if provider is None:
        raise ApiError(Code.provider_not_found, "No such sign-in provider")
    if intent != "login" and (identity is None or identity.session_id is None):
        raise ApiError(
            Code.unauthorized,
            "Sign in to link or confirm an account",
            headers={"WWW-Authenticate": "Bearer"},
        )
    check_redirect_uri(services.settings, redirect_uri)
    state = random_token(32)
    provider_verifier = random_token(32)
    now = datetime.now(UTC)
    expires_at = now + FLOW_TTL
    await purge_expired_flows(services)
    await services.db.execute(
        oauth_flows.insert().values(
            id=new_id(),
            state_hash=sha256(state),
            provider=provider.id,
            intent=intent,
            user_id=identity.user_id if intent != "login" and identity else None,
            session_id=identity.session_id if intent != "login" and identity else None,
            redirect_uri=redirect_uri,
            client_state=client_state,
            client_code_challenge=code_challenge,
            provider_code_verifier=provider_verifier,
            created_at=now,
            expires_at=expires_at,
        )
    )
    params = {
        **provider.authorize_params,
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": callback_url(services.settings, provider.id),
        "scope": " ".join(provider.scopes),
        "state": state,
    }
    if provider.pkce:
        params["code_challenge"] = s256(provider_verifier)
        params["code_challenge_method"] = "S256"
    separator = "&" if "?" in provider.authorize_url else "?"
    return StartedFlow(
        authorize_url=provider.authorize_url + separator + urlencode(params),
        expires_at=rfc3339(expires_at),
    )


async def purge_expired_flows(services: Services) -> None:
    """Flows are kept one day past expiry, then dropped (auth.md oauth_flows)."""
    cutoff = datetime.now(UTC) - PURGE_AFTER
    await services.db.execute(oauth_flows.delete().where(oauth_flows.c.expires_at < cutoff))


# --- E18 callback -------------------------------------------------------------------------


async def do_callback(
    services: Services,
    provider_id: str,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    iss: str | None,
) -> str:
    """Validate the state, redeem the provider's code, and return where to send the browser:
    the client's redirect URI with a result code or an error. Raises InvalidCallback (400, no
    redirect, no code exchange) when the state is missing, unknown, expired, used or belongs
    to another provider."""
    flow = await _claim_flow(services, provider_id, state)
    provider = registry_of(services).get(provider_id)
    try:
        if provider is None:  # disabled since the flow started
            return await _fail(services, flow, "server_error")
        if iss is not None and provider.issuer is not None and iss != provider.issuer:
            log.warning("oauth %s: callback iss %r is not the configured issuer", provider_id, iss)
            return await _fail(services, flow, "provider_error")
        if error is not None:
            return await _fail(
                services, flow, "access_denied" if error == "access_denied" else "provider_error"
            )
        if not code or len(code) > MAX_PROVIDER_CODE:
            return await _fail(services, flow, "provider_error")
        try:
            profile = await registry_of(services).fetch_profile(
                provider,
                code=code,
                redirect_uri=callback_url(services.settings, provider.id),
                code_verifier=flow["provider_code_verifier"],
            )
        except ProviderError as failure:
            log.warning("oauth %s: %s", provider_id, failure)
            return await _fail(services, flow, "provider_error")
        result_code = random_token(32)
        await services.db.execute(
            oauth_flows.update()
            .where(oauth_flows.c.id == flow["id"])
            .values(
                result_code_hash=sha256(result_code),
                result_expires_at=datetime.now(UTC) + RESULT_TTL,
                result=msgspec.to_builtins(profile),
            )
        )
        return _back_to_client(flow, code=result_code)
    except Exception:  # our own failure: the client still gets its answer
        log.exception("oauth %s: callback failed", provider_id)
        return _back_to_client(flow, error="server_error")


async def _claim_flow(services: Services, provider_id: str, state: str | None) -> dict[str, Any]:
    if not state or len(state) > 128:
        raise InvalidCallback("missing or malformed state")
    flow = await services.db.fetch_one(
        sa.select(oauth_flows).where(oauth_flows.c.state_hash == sha256(state))
    )
    now = datetime.now(UTC)
    if flow is None:
        raise InvalidCallback("unknown state")
    if flow["provider"] != provider_id:
        raise InvalidCallback("state of another provider")
    if flow["callback_at"] is not None:
        raise InvalidCallback("state already used")
    if flow["expires_at"] <= now:
        raise InvalidCallback("state expired")
    claimed = await services.db.fetch_one(
        oauth_flows.update()
        .where(
            oauth_flows.c.id == flow["id"],
            oauth_flows.c.callback_at.is_(None),
            oauth_flows.c.expires_at > now,
        )
        .values(callback_at=now)
        .returning(oauth_flows.c.id)
    )
    if claimed is None:  # a concurrent callback with the same state won
        raise InvalidCallback("state already used")
    return flow


async def _fail(services: Services, flow: dict[str, Any], error: CallbackError) -> str:
    await services.db.execute(
        oauth_flows.update().where(oauth_flows.c.id == flow["id"]).values(result={"error": error})
    )
    return _back_to_client(flow, error=error)


def _back_to_client(flow: dict[str, Any], **params: str) -> str:
    if flow["client_state"] is not None:
        params["state"] = flow["client_state"]
    uri = flow["redirect_uri"]
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


# --- E19 exchange -------------------------------------------------------------------------


def _invalid_code() -> ApiError:
    return ApiError(Code.invalid_oauth_code, "This sign-in code is not valid any more")


async def do_exchange(
    services: Services,
    identity: Identity | None,
    *,
    code: str,
    code_verifier: str,
    client: ClientInfo,
) -> OAuthTokenPair | LinkResult | None:
    """Redeem a result code: tokens for `login`, the new identity for `link`, None for
    `reauth` (the session counts as freshly authenticated)."""
    now = datetime.now(UTC)
    flow = await services.db.fetch_one(
        sa.select(oauth_flows).where(oauth_flows.c.result_code_hash == sha256(code))
    )
    if flow is None:
        raise _invalid_code()
    spent = await services.db.fetch_one(
        oauth_flows.update()
        .where(
            oauth_flows.c.id == flow["id"],
            oauth_flows.c.consumed_at.is_(None),
            oauth_flows.c.result_expires_at > now,
        )
        .values(consumed_at=now)
        .returning(oauth_flows.c.id)
    )
    # The code is spent before the verifier is compared: a wrong verifier burns it (R14).
    if spent is None or not same_digest(
        s256(code_verifier).encode(), flow["client_code_challenge"].encode()
    ):
        raise _invalid_code()
    result = flow["result"] or {}
    provider = registry_of(services).get(flow["provider"])
    if provider is None or "subject" not in result:
        raise _invalid_code()
    profile = msgspec.convert(result, Profile)
    if flow["intent"] == "login":
        return await login_with(services, provider, profile, client)
    if identity is None:
        raise ApiError(
            Code.unauthorized, "Sign in to do this", headers={"WWW-Authenticate": "Bearer"}
        )
    if identity.user_id != flow["user_id"]:
        raise ApiError(Code.identity_mismatch, "This flow was started by another account")
    if flow["intent"] == "link":
        return await link_identity(services, identity.user_id, provider, profile)
    if identity.session_id != flow["session_id"]:
        raise ApiError(Code.identity_mismatch, "This flow was started in another session")
    await reauth_with(services, identity.user_id, flow["session_id"], provider, profile)
    return None
