"""OAuth providers (auth.md R17): their configuration, the shipped presets, and the one HTTP
client every call to a provider goes through.

Configuration is JSON (`ANILAY_OAUTH_PROVIDERS`), an object keyed by provider id:

    {"shikimori": {"client_id": "…", "client_secret": "…"},
     "google": {"client_id": "…", "client_secret": "…", "enabled": false},
     "acme": {"name": "Acme", "authorize_url": "https://id.acme.test/authorize", …}}

An id with a preset (`shikimori`, `discord`, `google`, and `fake` in dev and test only) takes
the preset's URLs, scopes and field mapping, and the entry overrides any of them; any other id
must be configured in full. Only configured providers exist: a preset alone enables nothing.
`base_url`, when given, fills `{base_url}` in the URLs and the issuer (the fake provider runs
wherever a test or a developer starts it).

Outbound calls use a fresh httpx client per flow with a 10 s timeout and
`User-Agent: Anilay/<version>` (Shikimori refuses requests without one); the transport can be
injected, so a test or an embedding can route them anywhere.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote_plus

import httpx
import msgspec

if TYPE_CHECKING:
    from server.services import Services
    from server.settings import Settings

TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 1_048_576
PROVIDER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
URL_FIELDS = ("authorize_url", "token_url", "userinfo_url", "issuer", "icon_url")
TEST_ENVIRONMENTS = ("dev", "test")

FieldPath = str | list[str]


class ProviderConfigError(ValueError):
    """The provider configuration cannot be used; the message names the provider and field."""


class ProviderError(Exception):
    """A provider answered badly or not at all (network, 5xx, a refused code, bad JSON)."""


class FieldMapping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the userinfo document keeps each profile field.

    A path is a key or a dotted path into nested objects (`image.x160`); a list of paths takes
    the first that is present. `avatar` may be a template of userinfo keys
    (`https://cdn.example/{id}/{avatar}.png`). `email_verified` may be a constant for
    providers that only ever return verified addresses; null means "never verified".
    """

    subject: FieldPath = "sub"
    username: FieldPath = "preferred_username"
    email: FieldPath | None = "email"
    email_verified: FieldPath | bool | None = "email_verified"
    avatar: FieldPath | None = "picture"


class Provider(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: str
    name: str
    authorize_url: str
    token_url: str
    userinfo_url: str
    client_id: str
    client_secret: str
    scopes: tuple[str, ...] = ()
    pkce: bool = True
    token_auth: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"
    issuer: str | None = None
    icon_url: str | None = None
    enabled: bool = True
    authorize_params: dict[str, str] = {}
    mapping: FieldMapping = FieldMapping()
    base_url: str | None = None


class Profile(msgspec.Struct, frozen=True):
    """What Anilay keeps of a provider account: no tokens (auth.md R16)."""

    subject: str
    username: str | None
    email: str | None
    email_verified: bool
    avatar_url: str | None


PRESETS: dict[str, dict[str, Any]] = {
    "shikimori": {
        "name": "Shikimori",
        "authorize_url": "https://shikimori.one/oauth/authorize",
        "token_url": "https://shikimori.one/oauth/token",
        "userinfo_url": "https://shikimori.one/api/users/whoami",
        "scopes": [],
        "pkce": False,
        "icon_url": "https://shikimori.one/favicon.ico",
        "mapping": {
            "subject": "id",
            "username": "nickname",
            "email": None,
            "email_verified": None,
            "avatar": ["image.x160", "avatar"],
        },
    },
    "discord": {
        "name": "Discord",
        "authorize_url": "https://discord.com/oauth2/authorize",
        "token_url": "https://discord.com/api/oauth2/token",
        "userinfo_url": "https://discord.com/api/users/@me",
        "scopes": ["identify", "email"],
        "issuer": "https://discord.com",
        "icon_url": "https://discord.com/assets/favicon.ico",
        "mapping": {
            "subject": "id",
            "username": ["username", "global_name"],
            "email": "email",
            "email_verified": "verified",
            "avatar": "https://cdn.discordapp.com/avatars/{id}/{avatar}.png",
        },
    },
    "google": {
        "name": "Google",
        "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "userinfo_url": "https://openidconnect.googleapis.com/v1/userinfo",
        "scopes": ["openid", "email", "profile"],
        "issuer": "https://accounts.google.com",
        "icon_url": "https://www.google.com/favicon.ico",
        "mapping": {
            "subject": "sub",
            "username": ["given_name", "name"],
            "email": "email",
            "email_verified": "email_verified",
            "avatar": "picture",
        },
    },
}

# A local stand-in (tests/support/fake_oauth.py): never available in production.
FAKE_PRESET: dict[str, Any] = {
    "name": "Fake provider",
    "base_url": "http://127.0.0.1:9876",
    "authorize_url": "{base_url}/authorize",
    "token_url": "{base_url}/token",
    "userinfo_url": "{base_url}/userinfo",
    "issuer": "{base_url}",
    "client_id": "anilay-dev",
    "client_secret": "anilay-dev-secret",
    "scopes": ["openid", "profile", "email"],
}


def parse_providers(raw: str, environment: str) -> dict[str, Provider]:
    """Every configured provider, enabled or not, in configuration order."""
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ProviderConfigError(f"not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ProviderConfigError("expected an object keyed by provider id")
    providers: dict[str, Provider] = {}
    for provider_id, entry in config.items():
        if not PROVIDER_ID.match(provider_id):
            raise ProviderConfigError(f"{provider_id!r}: ids are 1-32 of a-z 0-9 _ -")
        if not isinstance(entry, dict):
            raise ProviderConfigError(f"{provider_id}: expected an object")
        providers[provider_id] = _build(provider_id, entry, environment)
    return providers


def _build(provider_id: str, entry: dict[str, Any], environment: str) -> Provider:
    if provider_id == "fake":
        if environment not in TEST_ENVIRONMENTS:
            raise ProviderConfigError("fake: exists only when ANILAY_ENV is dev or test")
        preset = FAKE_PRESET
    else:
        preset = PRESETS.get(provider_id, {})
    values = {**preset, **entry, "id": provider_id}
    values["mapping"] = {**preset.get("mapping", {}), **entry.get("mapping", {})}
    base_url = values.get("base_url")
    if base_url:
        for field in URL_FIELDS:
            if isinstance(values.get(field), str):
                values[field] = values[field].replace("{base_url}", base_url.rstrip("/"))
    values.setdefault("name", provider_id)
    try:
        provider = msgspec.convert(values, Provider)
    except msgspec.ValidationError as error:
        raise ProviderConfigError(f"{provider_id}: {error}") from None
    for field in ("authorize_url", "token_url", "userinfo_url"):
        if not getattr(provider, field).startswith(("https://", "http://")):
            raise ProviderConfigError(f"{provider_id}: {field} must be an http(s) URL")
    if not provider.client_id or not provider.client_secret:
        raise ProviderConfigError(f"{provider_id}: client_id and client_secret are required")
    return provider


class ProviderRegistry:
    """The process's providers and its outbound client for them."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        version: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._providers = dict(providers)
        self._transport = transport
        self._timeout_s = timeout_s
        self.user_agent = f"Anilay/{version}"

    @classmethod
    def from_settings(
        cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> ProviderRegistry:
        return cls(
            parse_providers(settings.oauth_providers, settings.environment),
            version=settings.version,
            transport=transport,
        )

    def get(self, provider_id: str) -> Provider | None:
        """An enabled provider, or None."""
        provider = self._providers.get(provider_id)
        return provider if provider is not None and provider.enabled else None

    def enabled(self) -> list[Provider]:
        return [p for p in self._providers.values() if p.enabled]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=self._timeout_s,
            headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            follow_redirects=False,
        )

    async def fetch_profile(
        self, provider: Provider, *, code: str, redirect_uri: str, code_verifier: str
    ) -> Profile:
        """Redeem an authorization code and read the account it belongs to.

        The provider's tokens live only inside this call (auth.md R16).
        """
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        headers: dict[str, str] = {}
        if provider.token_auth == "client_secret_basic":
            # RFC 6749 §2.3.1: both parts form-encoded before base64.
            pair = f"{quote_plus(provider.client_id)}:{quote_plus(provider.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = provider.client_id
            form["client_secret"] = provider.client_secret
        if provider.pkce:
            form["code_verifier"] = code_verifier
        async with self.client() as http:
            tokens = await _json(http, "POST", provider.token_url, data=form, headers=headers)
            access_token = tokens.get("access_token")
            if not isinstance(access_token, str) or not access_token:
                raise ProviderError("the token response has no access_token")
            userinfo = await _json(
                http,
                "GET",
                provider.userinfo_url,
                headers={"Authorization": f"Bearer {access_token}"},
            )
        return map_profile(provider.mapping, userinfo)


async def _json(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        async with http.stream(method, url, **kwargs) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise ProviderError(f"{url}: response over {MAX_RESPONSE_BYTES} bytes")
    except httpx.HTTPError as error:
        raise ProviderError(f"{url}: {error.__class__.__name__}: {error}") from None
    if response.status_code != 200:
        raise ProviderError(f"{url}: HTTP {response.status_code}: {bytes(body[:200])!r}")
    try:
        document = json.loads(body)
    except ValueError:
        raise ProviderError(f"{url}: the answer is not JSON") from None
    if not isinstance(document, dict):
        raise ProviderError(f"{url}: the answer is not a JSON object")
    return document


def map_profile(mapping: FieldMapping, userinfo: dict[str, Any]) -> Profile:
    """Read the profile fields out of a userinfo document; a missing subject is an error."""
    subject = _text(_pick(userinfo, mapping.subject))
    if not subject:
        raise ProviderError("the userinfo has no subject")
    email = _text(_pick(userinfo, mapping.email)) if mapping.email else None
    if isinstance(mapping.email_verified, bool):
        verified = mapping.email_verified
    elif mapping.email_verified is None:
        verified = False
    else:
        verified = _pick(userinfo, mapping.email_verified) in (True, "true", "True", 1)
    return Profile(
        subject=subject[:128],
        username=(_text(_pick(userinfo, mapping.username)) or None),
        email=email if email and "@" in email else None,
        email_verified=bool(email) and verified,
        avatar_url=_avatar(userinfo, mapping.avatar),
    )


def _pick(document: dict[str, Any], paths: FieldPath | None) -> Any:
    for path in [paths] if isinstance(paths, str) else paths or []:
        node: Any = document
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node not in (None, ""):
            return node
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        return str(value).strip() or None
    return None


def _avatar(userinfo: dict[str, Any], mapping: FieldPath | None) -> str | None:
    if isinstance(mapping, str) and "{" in mapping:
        keys = re.findall(r"{(\w+)}", mapping)
        values = {key: _text(userinfo.get(key)) for key in keys}
        if not all(values.values()):
            return None
        url = mapping.format(**values)
    else:
        url = _text(_pick(userinfo, mapping))
    if not url or not url.startswith(("https://", "http://")):
        return None
    return url if len(url) <= 512 else None


def registry_of(services: Services) -> ProviderRegistry:
    """The process's registry: the one the composition root (or a test) put on the services,
    else built from the settings on first use and kept there."""
    registry = getattr(services, "oauth", None)
    if registry is None:
        registry = ProviderRegistry.from_settings(services.settings)
        services.oauth = registry  # type: ignore[attr-defined]
    return registry
