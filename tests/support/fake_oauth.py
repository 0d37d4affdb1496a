"""A small OAuth 2.0 provider for tests (auth.md R17), served by a real uvicorn.

It plays the part of Shikimori, Discord or Google well enough for Anilay's server to talk
to it over HTTP, with the checks a real provider makes:
- `GET /authorize` signs in the scripted user and approves at once, redirecting to the
  `redirect_uri` with a code (or `error=access_denied` when consent is scripted as denied);
- `POST /token` authenticates the client (`client_secret_post` or `client_secret_basic`),
  accepts each code once, checks `redirect_uri` and, when the code was issued with a
  challenge, the PKCE S256 verifier;
- `GET /userinfo` answers for a bearer access token with an OIDC-style profile.
`fail["token"] = 503` (or "userinfo", "authorize") scripts an outage. Every token and
userinfo request is recorded for assertions.

Run it standalone for a dev server configured with the `fake` provider:
    python -m tests.support.fake_oauth [port]
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.net import tcp_listener


@dataclass
class FakeUser:
    """The account the authorize step signs in as."""

    subject: str
    username: str
    email: str | None = None
    email_verified: bool = True
    picture: str | None = None

    def userinfo(self) -> dict[str, Any]:
        document = {
            "sub": self.subject,
            "preferred_username": self.username,
            "email": self.email,
            "email_verified": self.email_verified,
            "picture": self.picture,
        }
        return {key: value for key, value in document.items() if value is not None}


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    user: FakeUser
    code_challenge: str | None
    used: bool = False


@dataclass
class Recorded:
    """One request to the token or userinfo endpoint, as the provider saw it."""

    path: str
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeOAuthProvider:
    clients: dict[str, str] = field(default_factory=dict)  # client_id -> client secret
    user: FakeUser | None = None
    deny_consent: bool = False
    fail: dict[str, int] = field(default_factory=dict)  # endpoint -> HTTP status to answer
    send_iss: bool = True
    issuer: str = ""  # defaults to the base URL once started
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, FakeUser] = field(default_factory=dict)
    url: str = ""
    _server: uvicorn.Server | None = None
    _task: asyncio.Task | None = None

    # --- scripting ------------------------------------------------------------------------

    def register_client(self, client_id: str, secret: str) -> None:
        self.clients[client_id] = secret

    def approve_as(self, user: FakeUser) -> FakeUser:
        self.user = user
        self.deny_consent = False
        return user

    def reset(self) -> None:
        """Forget every grant, token, failure and recording (registered clients stay)."""
        self.user = None
        self.deny_consent = False
        self.fail.clear()
        self.send_iss = True
        self.issuer = self.url
        self.authorize_requests.clear()
        self.requests.clear()
        self.grants.clear()
        self.tokens.clear()

    def token_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/token"]

    # --- endpoints ------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        client_id, redirect_uri = params.get("client_id"), params.get("redirect_uri")
        if client_id not in self.clients or not redirect_uri:
            # RFC 6749 §4.1.2.1: never redirect to an unverified redirect URI.
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        if params.get("response_type") != "code":
            return self._back(redirect_uri, params, error="unsupported_response_type")
        challenge = params.get("code_challenge")
        if challenge is not None and params.get("code_challenge_method") != "S256":
            return self._back(redirect_uri, params, error="invalid_request")
        if "authorize" in self.fail:
            return self._back(redirect_uri, params, error="server_error")
        if self.deny_consent or self.user is None:
            return self._back(redirect_uri, params, error="access_denied")
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(client_id, redirect_uri, self.user, challenge)
        return self._back(redirect_uri, params, code=code)

    def _back(self, redirect_uri: str, params: dict[str, str], **answer: str) -> Response:
        if "state" in params:
            answer["state"] = params["state"]
        if self.send_iss:
            answer["iss"] = self.issuer
        separator = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(redirect_uri + separator + urlencode(answer), status_code=302)

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.requests.append(Recorded("/token", form, dict(request.headers)))
        if "token" in self.fail:
            return _oauth_error("temporarily_unavailable", self.fail["token"])
        client_id = self._authenticate(request, form)
        if client_id is None:
            return _oauth_error("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type", 400)
        grant = self.grants.get(form.get("code", ""))
        if grant is None or grant.used or grant.client_id != client_id:
            return _oauth_error("invalid_grant", 400)
        grant.used = True  # single use, whatever happens next
        if form.get("redirect_uri") != grant.redirect_uri:
            return _oauth_error("invalid_grant", 400)
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.code_challenge:
                return _oauth_error("invalid_grant", 400)
        access_token = secrets.token_urlsafe(32)
        self.tokens[access_token] = grant.user
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": secrets.token_urlsafe(32),
            },
            headers={"Cache-Control": "no-store"},
        )

    def _authenticate(self, request: Request, form: dict[str, str]) -> str | None:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            if "client_secret" in form:
                return None  # RFC 6749 §2.3: one authentication method per request
            try:
                pair = base64.b64decode(header[6:]).decode()
            except ValueError:
                return None
            client_id, _, secret = (unquote_plus(part) for part in pair.partition(":"))
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        expected = self.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, secret):
            return None
        return client_id

    async def userinfo(self, request: Request) -> Response:
        self.requests.append(Recorded("/userinfo", {}, dict(request.headers)))
        if "userinfo" in self.fail:
            return _oauth_error("temporarily_unavailable", self.fail["userinfo"])
        header = request.headers.get("authorization", "")
        user = self.tokens.get(header.removeprefix("Bearer ")) if header else None
        if user is None:
            return _oauth_error("invalid_token", 401)
        return JSONResponse(user.userinfo())

    # --- serving --------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authorize", self.authorize, methods=["GET"]),
                Route("/token", self.token, methods=["POST"]),
                Route("/userinfo", self.userinfo, methods=["GET"]),
            ]
        )

    async def start(self, port: int = 0) -> FakeOAuthProvider:
        """Serve on 127.0.0.1 (a free port unless given) inside the running event loop."""
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        sock = tcp_listener(port)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.issuer = self.issuer or self.url
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(500):
            if self._server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("the fake OAuth provider did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)


def _oauth_error(error: str, status: int) -> Response:
    return JSONResponse({"error": error}, status_code=status, headers={"Cache-Control": "no-store"})


async def _serve_forever(port: int) -> None:
    """A dev stand-in for the `fake` preset's defaults (client anilay-dev)."""
    provider = FakeOAuthProvider()
    provider.register_client("anilay-dev", "anilay-dev-secret")
    provider.approve_as(FakeUser("dev-1", "dev_user", "dev@example.com"))
    await provider.start(port)
    print(f"fake OAuth provider on {provider.url}, approving as dev_user")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else 9876))
