"""Signing in with other sites (auth.md E16-E21, R13-R17), end to end over real HTTP.

Our server runs under uvicorn with two providers that both point at a local fake OAuth
provider (tests/support/fake_oauth.py), also under uvicorn: `fake` (the dev/test preset,
client_secret_post, PKCE) and `rival` (configured in full, client_secret_basic, no PKCE).
The test plays the browser: it opens the authorize URL, follows the provider's redirect to
our callback, and reads where our callback sends it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from models.auth.sessions import session_cache_key
from models.auth.tables import auth_sessions
from models.oauth import oauth_flows, oauth_identities, s256
from models.users import users
from server.auth import Identity
from server.oauth_providers import (
    FieldMapping,
    ProviderConfigError,
    map_profile,
    parse_providers,
)
from server.secrets import random_token, sha256
from server.settings import Settings, SettingsError
from tests.conftest import LiveServer, reset_state, start_live_server, stop_live_server
from tests.factories import ban, register
from tests.support.fake_oauth import FakeOAuthProvider, FakeUser

WEB_REDIRECT = "https://app.anilay.test/oauth/done"
MOBILE_REDIRECT = "anilay://oauth"
FAKE_CLIENT = ("anilay-test", "fake-client-secret")
RIVAL_CLIENT = ("anilay-rival", "rival-client-secret")


# --- the two servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[FakeOAuthProvider]:
    fake = FakeOAuthProvider()
    fake.register_client(*FAKE_CLIENT)
    fake.register_client(*RIVAL_CLIENT)
    await fake.start()
    yield fake
    await fake.stop()


def provider_config(fake_url: str) -> str:
    return json.dumps(
        {
            "fake": {
                "base_url": fake_url,
                "client_id": FAKE_CLIENT[0],
                "client_secret": FAKE_CLIENT[1],
            },
            "rival": {
                "name": "Rival",
                "authorize_url": f"{fake_url}/authorize",
                "token_url": f"{fake_url}/token",
                "userinfo_url": f"{fake_url}/userinfo",
                "client_id": RIVAL_CLIENT[0],
                "client_secret": RIVAL_CLIENT[1],
                "token_auth": "client_secret_basic",
                "pkce": False,
                "scopes": ["profile"],
            },
            "google": {"client_id": "g", "client_secret": "g", "enabled": False},
        }
    )


@pytest.fixture(scope="module")
async def oauth_server(backend: Settings, provider) -> AsyncIterator[LiveServer]:
    settings = backend.replace(
        oauth_providers=provider_config(provider.url),
        oauth_redirect_uris=(WEB_REDIRECT, MOBILE_REDIRECT),
    )
    live = await start_live_server(settings)
    # Our callback URL is built from the public URL, known once the port is.
    live.services.settings = live.settings.replace(public_url=live.url)
    yield live
    await stop_live_server(live)


@pytest.fixture
async def live(oauth_server: LiveServer, provider: FakeOAuthProvider) -> LiveServer:
    await reset_state(oauth_server.services)
    provider.reset()
    return oauth_server


@pytest.fixture
async def client(live: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url + "/api/v1", timeout=15) as http:
        yield http


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """Follows nothing by itself: each hop is a step the test looks at."""
    async with httpx.AsyncClient(timeout=15, follow_redirects=False) as http:
        yield http


# --- the flow, step by step -------------------------------------------------------------------


@dataclass
class Started:
    authorize_url: str
    verifier: str
    client_state: str

    @property
    def provider_params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.authorize_url).query).items()}


@dataclass
class Landing:
    """Where our callback sent the browser: the client's redirect URI and its query."""

    location: str
    params: dict[str, str]
    verifier: str

    @property
    def code(self) -> str:
        return self.params["code"]


async def start(
    client: httpx.AsyncClient,
    *,
    intent: str = "login",
    provider: str = "fake",
    headers: dict[str, str] | None = None,
    redirect_uri: str = WEB_REDIRECT,
) -> Started:
    verifier = random_token(32)
    client_state = random_token(12)
    response = await client.post(
        f"/auth/oauth/{provider}/start",
        json={
            "intent": intent,
            "redirect_uri": redirect_uri,
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            "client_state": client_state,
        },
        headers=headers or {},
    )
    assert response.status_code == 200, response.text
    return Started(response.json()["authorize_url"], verifier, client_state)


async def to_callback(browser: httpx.AsyncClient, started: Started) -> str:
    """The provider's step: it approves and redirects to our callback."""
    response = await browser.get(started.authorize_url)
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def land(
    browser: httpx.AsyncClient, callback_url: str, started: Started, redirect: str = WEB_REDIRECT
) -> Landing:
    response = await browser.get(callback_url)
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    location = response.headers["location"]
    assert location.startswith(redirect + "?"), location
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["state"] == started.client_state
    return Landing(location, params, started.verifier)


async def flow(client: httpx.AsyncClient, browser: httpx.AsyncClient, **start_args) -> Landing:
    started = await start(client, **start_args)
    callback = await to_callback(browser, started)
    return await land(browser, callback, started, start_args.get("redirect_uri", WEB_REDIRECT))


async def exchange(
    http: httpx.AsyncClient,
    landing: Landing,
    headers: dict[str, str] | None = None,
    verifier: str | None = None,
    **extra,
) -> httpx.Response:
    """E19; `extra` adds body fields (`client`, `device_name`)."""
    return await http.post(
        "/auth/oauth/exchange",
        json={"code": landing.code, "code_verifier": verifier or landing.verifier, **extra},
        headers=headers or {},
    )


async def oauth_login(
    client: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    fake: FakeOAuthProvider,
    user: FakeUser,
    **start_args,
) -> dict:
    """A whole sign-in as `user`; `start_args` go to E17 (`provider="rival"`, ...)."""
    fake.approve_as(user)
    landing = await flow(client, browser, **start_args)
    response = await exchange(client, landing)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(body: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


def naruto(subject: str = "sub-naruto", **fields) -> FakeUser:
    values = {"email": "naruto@leaf.example", "picture": "https://img.example/n.png", **fields}
    return FakeUser(subject, "Наруто Узумаки", **values)


async def identities_of(live: LiveServer, user_id: int) -> list[dict]:
    return await live.services.db.fetch_all(
        sa.select(oauth_identities).where(oauth_identities.c.user_id == user_id)
    )


async def user_row(live: LiveServer, user_id: int) -> dict:
    row = await live.services.db.fetch_one(sa.select(users).where(users.c.id == user_id))
    assert row is not None
    return row


# --- E16 providers ----------------------------------------------------------------------------


async def test_providers_lists_the_enabled_ones_for_five_minutes(client):
    response = await client.get("/auth/oauth/providers")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    items = response.json()["items"]
    assert [item["id"] for item in items] == ["fake", "rival"]  # google is disabled
    assert items[1] == {"id": "rival", "name": "Rival", "icon_url": None}


# --- E17 start --------------------------------------------------------------------------------


async def test_authorize_url_carries_a_hashed_state_and_the_servers_own_pkce(client, live):
    started = await start(client)
    params = started.provider_params
    assert params["response_type"] == "code"
    assert params["client_id"] == FAKE_CLIENT[0]
    assert params["redirect_uri"] == f"{live.url}/api/v1/auth/oauth/fake/callback"
    assert params["scope"] == "openid profile email"
    assert len(params["state"]) == 43  # 32 random bytes
    assert params["code_challenge_method"] == "S256"
    assert params["code_challenge"] != s256(started.verifier)  # ours, not the client's
    flow_row = await live.services.db.fetch_one(sa.select(oauth_flows))
    assert flow_row["state_hash"] == sha256(params["state"])
    assert params["state"] not in json.dumps({k: str(v) for k, v in flow_row.items()})
    lifetime = flow_row["expires_at"] - flow_row["created_at"]
    assert lifetime == timedelta(minutes=10)


async def test_a_provider_without_pkce_still_gets_a_state(client):
    params = (await start(client, provider="rival")).provider_params
    assert len(params["state"]) == 43
    assert "code_challenge" not in params
    assert params["client_id"] == RIVAL_CLIENT[0]


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.anilay.test/oauth/done/",
        "https://app.anilay.test/oauth/done?next=/admin",
        "https://app.anilay.test/oauth/don",
        "https://app.anilay.test/oauth/done/extra",
        "http://app.anilay.test/oauth/done",
        "https://app.anilay.test:8443/oauth/done",
        "https://evil.example/oauth/done",
        "HTTPS://app.anilay.test/oauth/done",
        "anilay://oauth/extra",
    ],
)
async def test_redirect_uri_must_match_the_allow_list_exactly(client, redirect_uri):
    response = await client.post(
        "/auth/oauth/fake/start",
        json={
            "intent": "login",
            "redirect_uri": redirect_uri,
            "code_challenge": s256(random_token(32)),
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "redirect_uri_not_allowed"
    assert body["errors"][0]["field"] == "redirect_uri"


async def test_a_listed_mobile_scheme_gets_the_result(client, browser, provider):
    provider.approve_as(naruto())
    landing = await flow(client, browser, redirect_uri=MOBILE_REDIRECT)
    assert landing.location.startswith("anilay://oauth?code=")
    assert (await exchange(client, landing)).status_code == 200


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"code_challenge_method": "plain"}, "code_challenge_method"),
        ({"code_challenge": "short"}, "code_challenge"),
        ({"code_challenge": "x" * 42 + "!"}, "code_challenge"),
        ({"intent": "register"}, "intent"),
        ({"client_state": "s" * 257}, "client_state"),
        ({"redirect_uri": "https://a.example/" + "x" * 512}, "redirect_uri"),
    ],
)
async def test_start_validates_its_body(client, change, field):
    body = {
        "intent": "login",
        "redirect_uri": WEB_REDIRECT,
        "code_challenge": s256(random_token(32)),
        "code_challenge_method": "S256",
        **change,
    }
    response = await client.post("/auth/oauth/fake/start", json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.parametrize("provider_id", ["nope", "google", "shikimori", "x" * 40])
async def test_unknown_or_disabled_provider_is_404(client, provider_id):
    response = await client.post(
        f"/auth/oauth/{provider_id}/start",
        json={
            "intent": "login",
            "redirect_uri": WEB_REDIRECT,
            "code_challenge": s256(random_token(32)),
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 404
    assert response.json()["code"] == "provider_not_found"


@pytest.mark.parametrize("intent", ["link", "reauth"])
async def test_link_and_reauth_need_a_bearer(client, intent):
    response = await client.post(
        "/auth/oauth/fake/start",
        json={
            "intent": intent,
            "redirect_uri": WEB_REDIRECT,
            "code_challenge": s256(random_token(32)),
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_start_is_limited_to_20_a_minute_per_ip(client):
    for _ in range(20):
        await start(client)
    response = await client.post(
        "/auth/oauth/fake/start",
        json={
            "intent": "login",
            "redirect_uri": WEB_REDIRECT,
            "code_challenge": s256(random_token(32)),
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1


async def test_bot_keys_are_refused_on_every_oauth_route_but_the_public_list(client, live):
    """auth.md: bot keys get 403 bot_not_allowed on every auth route except E6."""
    real = live.services.resolve_identity

    async def resolve(credentials, request):
        if credentials[0] == "bot":
            return Identity(kind="bot", user_id=1, role="user", status="active", api_key_id=7)
        return await real(credentials, request)

    live.services.resolve_identity = resolve
    try:
        bot = {"Authorization": "Bot anl_abcdefgh_secret"}
        calls = [
            ("POST", "/auth/oauth/fake/start", {"intent": "login"}),
            ("POST", "/auth/oauth/exchange", {"code": "x", "code_verifier": "v" * 43}),
            ("GET", "/auth/oauth/identities", None),
            ("DELETE", "/auth/oauth/identities/fake", None),
        ]
        for method, path, body in calls:
            response = await client.request(method, path, json=body, headers=bot)
            assert response.status_code == 403, (path, response.text)
            assert response.json()["code"] == "bot_not_allowed"
        assert (await client.get("/auth/oauth/providers", headers=bot)).status_code == 200
    finally:
        live.services.resolve_identity = real


# --- E18/E19 login ----------------------------------------------------------------------------


async def test_first_login_creates_an_account_from_the_provider_profile(
    client, browser, provider, live, capture
):
    provider.approve_as(naruto())
    landing = await flow(client, browser)
    async with capture() as events:
        response = await exchange(client, landing, client="ios", device_name="Phone")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["created"] is True
    assert body["token_type"] == "Bearer" and body["refresh_token"].startswith("rt_")
    user = body["user"]
    assert user["username"] == "Naruto_Uzumaki"
    assert user["display_name"] == "Наруто Узумаки"
    assert user["email"] == "naruto@leaf.example" and user["email_verified"] is True
    assert user["has_password"] is False
    row = await user_row(live, int(user["id"]))
    assert row["username_generated"] is True and row["password_hash"] is None

    me = (await client.get("/auth/me", headers=bearer(body))).json()
    assert me["session"]["auth_method"] == "oauth:fake"
    assert me["session"]["client"] == "ios"
    assert me["identities"] == [{"provider": "fake", "username": "Наруто Узумаки"}]
    created = [e for e in await events.events() if e.type == "SESSION_CREATE"]
    assert len(created) == 1
    assert created[0].targets.topics == (f"user:{user['id']}",)
    assert created[0].data["session"]["auth_method"] == "oauth:fake"


async def test_returning_login_signs_into_the_same_account(client, browser, provider, live):
    first = await oauth_login(client, browser, provider, naruto())
    again = await oauth_login(client, browser, provider, naruto(picture="https://img.example/2"))
    assert again["created"] is False
    assert again["user"]["id"] == first["user"]["id"]
    assert again["session_id"] != first["session_id"]
    (identity,) = await identities_of(live, int(first["user"]["id"]))
    assert identity["avatar_url"] == "https://img.example/2"  # the snapshot follows the provider
    assert identity["last_login_at"] is not None


async def test_a_taken_username_gets_a_numbered_suffix(client, browser, provider):
    await register(client, username="Naruto_Uzumaki", email="other@example.com")
    body = await oauth_login(client, browser, provider, naruto(email=None))
    assert body["user"]["username"].startswith("Naruto_Uzumaki_")
    suffix = body["user"]["username"].rsplit("_", 1)[1]
    assert len(suffix) == 4 and suffix.isdigit()


async def test_a_nickname_with_no_usable_letters_becomes_user_nnnn(client, browser, provider):
    body = await oauth_login(client, browser, provider, FakeUser("sub-jp", "日本語"))
    username = body["user"]["username"]
    assert username.startswith("user_") and username[5:].isdigit()


async def test_an_email_the_provider_does_not_vouch_for_is_not_kept(
    client, browser, provider, live
):
    body = await oauth_login(client, browser, provider, naruto(email_verified=False))
    assert body["user"]["email"] is None
    (identity,) = await identities_of(live, int(body["user"]["id"]))
    assert identity["email"] is None


async def test_a_verified_email_of_another_account_is_a_conflict_not_a_link(
    client, browser, provider, live
):
    """R16: accounts are never linked automatically by email."""
    owner = await register(client, email="naruto@leaf.example")
    provider.approve_as(naruto())
    response = await exchange(client, await flow(client, browser))
    assert response.status_code == 409
    assert response.json()["code"] == "oauth_email_conflict"
    assert await identities_of(live, owner.id) == []
    count = await live.services.db.fetch_val(sa.select(sa.func.count()).select_from(users))
    assert count == 1


async def test_closed_registration_refuses_new_accounts_but_not_returning_ones(
    client, browser, provider, live
):
    known = await oauth_login(client, browser, provider, naruto())
    settings = live.services.settings
    live.services.settings = settings.replace(registration_open=False)
    try:
        provider.approve_as(FakeUser("sub-new", "newcomer"))
        response = await exchange(client, await flow(client, browser))
        assert response.status_code == 403
        assert response.json()["code"] == "registration_closed"
        again = await oauth_login(client, browser, provider, naruto())
        assert again["user"]["id"] == known["user"]["id"]
    finally:
        live.services.settings = settings


async def test_banned_users_can_still_sign_in_with_oauth(client, browser, provider, live):
    """R9: OAuth login works for banned users; E6 shows the restriction."""
    first = await oauth_login(client, browser, provider, naruto())
    await ban(live.services, int(first["user"]["id"]))
    again = await oauth_login(client, browser, provider, naruto())
    me = (await client.get("/auth/me", headers=bearer(again))).json()
    assert me["restrictions"]["banned"] is True


async def test_provider_tokens_are_not_kept(client, browser, provider, live):
    body = await oauth_login(client, browser, provider, naruto())
    flow_row = await live.services.db.fetch_one(sa.select(oauth_flows))
    assert set(flow_row["result"]) == {
        "subject",
        "username",
        "email",
        "email_verified",
        "avatar_url",
    }
    stored = json.dumps({k: str(v) for k, v in flow_row.items()})
    for token in provider.tokens:
        assert token not in stored
    assert body["access_token"] not in stored


async def test_the_token_request_authenticates_with_secret_verifier_and_user_agent(
    client, browser, provider, live
):
    await oauth_login(client, browser, provider, naruto())
    await oauth_login(client, browser, provider, naruto("sub-rival", email=None), provider="rival")
    fake_request, rival_request = provider.token_requests()
    assert fake_request.form["client_secret"] == FAKE_CLIENT[1]
    assert len(fake_request.form["code_verifier"]) == 43
    assert "authorization" not in fake_request.headers
    assert rival_request.headers["authorization"].startswith("Basic ")
    assert "client_secret" not in rival_request.form
    assert "code_verifier" not in rival_request.form
    for recorded in provider.requests:
        assert recorded.headers["user-agent"] == f"Anilay/{live.settings.version}"


# --- E18 state (R14) --------------------------------------------------------------------------


def assert_refused_page(response: httpx.Response) -> None:
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_a_callback_without_state_or_with_an_unknown_one_is_refused(
    client, browser, provider, live
):
    provider.approve_as(naruto())
    callback = await to_callback(browser, await start(client))
    base = callback.split("?")[0]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    for url in (f"{base}?code={code}", f"{base}?code={code}&state={random_token(32)}", base):
        assert_refused_page(await browser.get(url))
    assert provider.token_requests() == []


async def test_a_replayed_state_is_refused_without_a_second_code_exchange(
    client, browser, provider
):
    provider.approve_as(naruto())
    started = await start(client)
    callback = await to_callback(browser, started)
    await land(browser, callback, started)
    assert_refused_page(await browser.get(callback))
    assert len(provider.token_requests()) == 1


async def test_an_expired_state_is_refused(client, browser, provider, live):
    provider.approve_as(naruto())
    callback = await to_callback(browser, await start(client))
    await live.services.db.execute(
        oauth_flows.update().values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    assert_refused_page(await browser.get(callback))
    assert provider.token_requests() == []


async def test_a_state_from_another_provider_is_refused(client, browser, provider):
    provider.approve_as(naruto())
    callback = await to_callback(browser, await start(client, provider="rival"))
    assert "/auth/oauth/rival/callback?" in callback
    forged = callback.replace("/auth/oauth/rival/callback", "/auth/oauth/fake/callback")
    assert_refused_page(await browser.get(forged))
    assert provider.token_requests() == []


async def test_concurrent_callbacks_with_one_state_exchange_the_code_once(
    client, browser, provider
):
    provider.approve_as(naruto())
    callback = await to_callback(browser, await start(client))
    responses = await asyncio.gather(*(browser.get(callback) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [302, 400, 400, 400, 400]
    assert len(provider.token_requests()) == 1


async def test_denied_consent_sends_the_client_access_denied(client, browser, provider):
    provider.deny_consent = True
    landing = await flow(client, browser)
    assert landing.params == {"error": "access_denied", "state": landing.params["state"]}
    assert provider.token_requests() == []


@pytest.mark.parametrize("endpoint", ["token", "userinfo"])
async def test_a_provider_outage_sends_the_client_provider_error(
    client, browser, provider, endpoint
):
    provider.approve_as(naruto())
    provider.fail[endpoint] = 503 if endpoint == "token" else 500
    landing = await flow(client, browser)
    assert landing.params["error"] == "provider_error"
    assert "code" not in landing.params


async def test_a_callback_from_the_wrong_issuer_is_not_exchanged(client, browser, provider):
    """RFC 9207: an `iss` that is not the configured issuer is a mix-up."""
    provider.approve_as(naruto())
    provider.issuer = "https://impostor.example"
    landing = await flow(client, browser)
    assert landing.params["error"] == "provider_error"
    assert provider.token_requests() == []


async def test_no_iss_is_fine(client, browser, provider):
    provider.approve_as(naruto())
    provider.send_iss = False
    landing = await flow(client, browser)
    assert (await exchange(client, landing)).status_code == 200


# --- E19 the result code (R14) ----------------------------------------------------------------


async def test_a_wrong_verifier_burns_the_result_code(client, browser, provider):
    provider.approve_as(naruto())
    landing = await flow(client, browser)
    wrong = await exchange(client, landing, verifier=random_token(32))
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_oauth_code"
    right = await exchange(client, landing)
    assert right.status_code == 400
    assert right.json()["code"] == "invalid_oauth_code"


async def test_a_result_code_works_once(client, browser, provider):
    provider.approve_as(naruto())
    landing = await flow(client, browser)
    assert (await exchange(client, landing)).status_code == 200
    replay = await exchange(client, landing)
    assert replay.status_code == 400
    assert replay.json()["code"] == "invalid_oauth_code"


async def test_concurrent_exchanges_of_one_code_pay_out_once(client, browser, provider):
    provider.approve_as(naruto())
    landing = await flow(client, browser)
    responses = await asyncio.gather(*(exchange(client, landing) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200, 400, 400, 400, 400]


async def test_a_result_code_expires_after_a_minute(client, browser, provider, live):
    provider.approve_as(naruto())
    landing = await flow(client, browser)
    flow_row = await live.services.db.fetch_one(sa.select(oauth_flows))
    assert flow_row["result_expires_at"] - flow_row["callback_at"] <= timedelta(seconds=61)
    await live.services.db.execute(
        oauth_flows.update().values(result_expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    response = await exchange(client, landing)
    assert response.json()["code"] == "invalid_oauth_code"


async def test_an_unknown_code_is_invalid(client):
    response = await client.post(
        "/auth/oauth/exchange", json={"code": random_token(32), "code_verifier": random_token(32)}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_oauth_code"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"code": "c", "code_verifier": "short"}, "code_verifier"),
        ({"code": "c", "code_verifier": "v" * 129}, "code_verifier"),
        ({"code": "c", "code_verifier": "v" * 42 + " "}, "code_verifier"),
        ({"code": "", "code_verifier": "v" * 43}, "code"),
        ({"code": "c", "code_verifier": "v" * 43, "client": "tv"}, "client"),
    ],
)
async def test_exchange_validates_its_body(client, body, field):
    response = await client.post("/auth/oauth/exchange", json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


# --- link, E20, E21 ---------------------------------------------------------------------------


async def test_link_lists_and_unlink_a_provider(client, browser, provider, live, capture):
    account = await register(client)
    provider.approve_as(naruto())
    landing = await flow(client, browser, intent="link", headers=account.headers)
    async with capture() as events:
        linked = await exchange(client, landing, headers=account.headers)
    assert linked.status_code == 200, linked.text
    identity = linked.json()["identity"]
    assert identity["provider"] == "fake" and identity["username"] == "Наруто Узумаки"
    (update,) = [e for e in await events.events() if e.type == "ACCOUNT_UPDATE"]
    assert update.data["identities"] == ["fake"]
    assert update.targets.topics == (f"user:{account.id}",)

    listed = await client.get("/auth/oauth/identities", headers=account.headers)
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert item["email"] == "naruto@leaf.example"
    assert item["avatar_url"] == "https://img.example/n.png"
    assert item["created_at"] == identity["created_at"]

    # The linked provider now signs into this very account.
    again = await oauth_login(client, browser, provider, naruto())
    assert again["created"] is False and int(again["user"]["id"]) == account.id

    async with capture() as events:
        gone = await client.delete("/auth/oauth/identities/fake", headers=account.headers)
    assert gone.status_code == 204
    (update,) = [e for e in await events.events() if e.type == "ACCOUNT_UPDATE"]
    assert update.data["identities"] == []
    assert (await client.get("/auth/oauth/identities", headers=account.headers)).json() == {
        "items": []
    }
    missing = await client.delete("/auth/oauth/identities/fake", headers=account.headers)
    assert missing.status_code == 404


async def test_link_needs_the_bearer_of_the_user_who_started_it(client, browser, provider, live):
    alice, mallory = await register(client), await register(client)
    provider.approve_as(naruto())
    landing = await flow(client, browser, intent="link", headers=alice.headers)
    anonymous = await exchange(client, landing)
    assert anonymous.status_code == 401
    provider.approve_as(naruto())
    landing = await flow(client, browser, intent="link", headers=alice.headers)
    response = await exchange(client, landing, headers=mallory.headers)
    assert response.status_code == 403
    assert response.json()["code"] == "identity_mismatch"
    assert await identities_of(live, alice.id) == []
    assert await identities_of(live, mallory.id) == []


async def test_an_identity_linked_to_another_account_is_in_use(client, browser, provider):
    await oauth_login(client, browser, provider, naruto())
    account = await register(client)
    provider.approve_as(naruto())
    landing = await flow(client, browser, intent="link", headers=account.headers)
    response = await exchange(client, landing, headers=account.headers)
    assert response.status_code == 409
    assert response.json()["code"] == "identity_in_use"


async def test_one_account_per_provider(client, browser, provider):
    account = await register(client)
    for subject, expected in (("sub-1", 200), ("sub-2", 409)):
        provider.approve_as(naruto(subject, email=None))
        landing = await flow(client, browser, intent="link", headers=account.headers)
        response = await exchange(client, landing, headers=account.headers)
        assert response.status_code == expected, response.text
    assert response.json()["code"] == "provider_already_linked"


async def test_the_last_way_to_sign_in_cannot_be_unlinked(client, browser, provider, live):
    body = await oauth_login(client, browser, provider, naruto())
    refused = await client.delete("/auth/oauth/identities/fake", headers=bearer(body))
    assert refused.status_code == 409
    assert refused.json()["code"] == "last_login_method"
    provider.approve_as(naruto("sub-rival-naruto"))
    landing = await flow(client, browser, intent="link", provider="rival", headers=bearer(body))
    assert (await exchange(client, landing, headers=bearer(body))).status_code == 200
    assert (
        await client.delete("/auth/oauth/identities/fake", headers=bearer(body))
    ).status_code == 204
    assert [i["provider"] for i in await identities_of(live, int(body["user"]["id"]))] == ["rival"]


async def test_concurrent_unlinks_leave_a_passwordless_account_one_way_in(
    client, browser, provider, live
):
    body = await oauth_login(client, browser, provider, naruto())
    provider.approve_as(naruto("sub-rival-naruto"))
    landing = await flow(client, browser, intent="link", provider="rival", headers=bearer(body))
    assert (await exchange(client, landing, headers=bearer(body))).status_code == 200
    responses = await asyncio.gather(
        client.delete("/auth/oauth/identities/fake", headers=bearer(body)),
        client.delete("/auth/oauth/identities/rival", headers=bearer(body)),
    )
    assert sorted(r.status_code for r in responses) == [204, 409]
    assert len(await identities_of(live, int(body["user"]["id"]))) == 1


# --- reauth (R13) -----------------------------------------------------------------------------


async def age_authentication(live: LiveServer, session_id: int) -> None:
    await live.services.db.execute(
        auth_sessions.update()
        .where(auth_sessions.c.id == session_id)
        .values(authenticated_at=datetime.now(UTC) - timedelta(hours=1))
    )
    await live.services.cache.delete(session_cache_key(session_id))


async def test_reauth_renews_recent_authentication_for_an_oauth_only_account(
    client, browser, provider, live
):
    body = await oauth_login(client, browser, provider, naruto())
    headers = bearer(body)
    await age_authentication(live, int(body["session_id"]))
    first_password = {"new_password": "a brand new passphrase"}
    stale = await client.post("/auth/password/change", json=first_password, headers=headers)
    assert stale.status_code == 403
    assert stale.json()["code"] == "reauth_required"

    provider.approve_as(naruto())
    landing = await flow(client, browser, intent="reauth", headers=headers)
    renewed = await exchange(client, landing, headers=headers)
    assert renewed.status_code == 204
    assert renewed.content == b""
    fresh = await client.post("/auth/password/change", json=first_password, headers=headers)
    assert fresh.status_code == 204, fresh.text


async def test_reauth_with_an_identity_not_linked_to_me_is_a_mismatch(
    client, browser, provider, live
):
    account = await register(client)
    await age_authentication(live, account.session_id)
    provider.approve_as(naruto())
    landing = await flow(client, browser, intent="reauth", headers=account.headers)
    response = await exchange(client, landing, headers=account.headers)
    assert response.status_code == 403
    assert response.json()["code"] == "identity_mismatch"
    session = await live.services.db.fetch_one(
        sa.select(auth_sessions).where(auth_sessions.c.id == account.session_id)
    )
    assert datetime.now(UTC) - session["authenticated_at"] > timedelta(minutes=30)


async def test_reauth_by_another_user_is_a_mismatch(client, browser, provider):
    body = await oauth_login(client, browser, provider, naruto())
    other = await register(client)
    provider.approve_as(naruto())
    landing = await flow(client, browser, intent="reauth", headers=bearer(body))
    response = await exchange(client, landing, headers=other.headers)
    assert response.status_code == 403
    assert response.json()["code"] == "identity_mismatch"


# --- provider configuration (R17) -------------------------------------------------------------


def test_presets_fill_in_everything_but_the_client():
    providers = parse_providers(
        json.dumps(
            {
                "shikimori": {"client_id": "s", "client_secret": "s"},
                "discord": {"client_id": "d", "client_secret": "d"},
                "google": {"client_id": "g", "client_secret": "g"},
            }
        ),
        "production",
    )
    assert providers["shikimori"].token_url == "https://shikimori.one/oauth/token"
    assert providers["discord"].scopes == ("identify", "email")
    assert providers["google"].issuer == "https://accounts.google.com"


def test_the_fake_provider_exists_only_in_dev_and_test():
    config = json.dumps({"fake": {}})
    assert parse_providers(config, "dev")["fake"].token_url == "http://127.0.0.1:9876/token"
    with pytest.raises(ProviderConfigError):
        parse_providers(config, "production")
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"ANILAY_OAUTH_PROVIDERS": config})
    assert "ANILAY_OAUTH_PROVIDERS" in str(error.value)


@pytest.mark.parametrize(
    "config",
    [
        "not json",
        '["fake"]',
        '{"acme": {"client_id": "a", "client_secret": "b"}}',  # no preset, no URLs
        '{"shikimori": {}}',  # no client
        '{"Bad Id": {}}',
        '{"shikimori": {"client_id": "a", "client_secret": "b", "token_auth": "none"}}',
    ],
)
def test_unusable_configuration_is_refused_at_startup(config):
    with pytest.raises(SettingsError):
        Settings.from_env({"ANILAY_OAUTH_PROVIDERS": config, "ANILAY_ENV": "test"})


def test_settings_read_the_redirect_allow_list():
    settings = Settings.from_env({"ANILAY_OAUTH_REDIRECT_URIS": f"{WEB_REDIRECT}, anilay://oauth"})
    assert settings.oauth_redirect_uris == (WEB_REDIRECT, "anilay://oauth")


def test_field_mappings_of_the_presets():
    providers = parse_providers(
        json.dumps(
            {
                "shikimori": {"client_id": "s", "client_secret": "s"},
                "discord": {"client_id": "d", "client_secret": "d"},
            }
        ),
        "production",
    )
    shikimori = map_profile(
        providers["shikimori"].mapping,
        {"id": 42, "nickname": "Ниндзя", "image": {"x160": "https://shiki.example/42.png"}},
    )
    assert (shikimori.subject, shikimori.username) == ("42", "Ниндзя")
    assert shikimori.email is None and shikimori.avatar_url == "https://shiki.example/42.png"
    discord = map_profile(
        providers["discord"].mapping,
        {"id": "80", "username": "nel", "avatar": "abc", "email": "n@x.io", "verified": True},
    )
    assert discord.avatar_url == "https://cdn.discordapp.com/avatars/80/abc.png"
    assert discord.email_verified is True
    unverified = map_profile(FieldMapping(), {"sub": "1", "email": "a@b.c"})
    assert unverified.email_verified is False
