"""Settings, read once from the environment into a frozen object.

Every knob the product has is here, with its default; `create_app(settings)` and the CLI
receive a `Settings` and nothing reads `os.environ` anywhere else.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Literal

Role = Literal["all", "rest", "gateway", "worker"]
ROLES: tuple[Role, ...] = ("all", "rest", "gateway", "worker")

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/anilay.db"


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    role: Role = "all"
    # Snowflake worker id (0..1023). None: leased from Redis in scale-out, 0 when embedded.
    worker_id: int | None = None
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    access_log: bool = True
    max_body_bytes: int = 1_048_576
    # The event log (gateway.md, Data).
    gateway_log_maxlen: int = 100_000
    gateway_log_retention_s: int = 300
    gateway_resume_window_s: int = 300
    gateway_drain_s: float = 10.0
    # Cost of password hashing; tests lower it, production keeps OWASP's argon2id values.
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19_456
    argon2_parallelism: int = 1
    # Outbox sweeper period while events wait for Redis; job queue poll period.
    outbox_poll_s: float = 1.0
    jobs_poll_s: float = 1.0
    # The worker's clock-driven domain sweeps (key expiry and rotation grace, account deletion,
    # export expiry, push receipts, list history). The test server turns them off and runs
    # each sweep itself, right after it moves a clock, so no timer can race it.
    timed_sweeps: bool = True
    redis_timeout_s: float = 1.0
    db_pool_min: int = 1
    db_pool_max: int = 10
    version: str = "0.1.0"
    commit: str = "unknown"
    environment: Literal["production", "dev", "test"] = "production"
    # Blob storage of the embedded deployment (data exports, users.md R10): a local directory.
    data_dir: str = "./var/data"
    # Identity (auth.md).
    issuer: str = "https://anilay.dev"
    public_url: str = "http://127.0.0.1:8000"  # links in mail, OAuth callbacks
    web_url: str = "http://127.0.0.1:3000"  # the web app: where mail links land
    key_encryption_key: str | None = None  # base64url 32 bytes; else a file under ./var
    key_encryption_key_file: str = "./var/key-encryption.key"
    registration_open: bool = True
    trusted_proxies: tuple[str, ...] = ()
    # OAuth (auth.md R15, R17): provider configuration as JSON text, checked by
    # server.oauth_providers; and the exact redirect URIs clients may ask to come back to.
    oauth_providers: str = ""
    oauth_redirect_uris: tuple[str, ...] = ()
    # Mail: with no SMTP host, mail is logged (dev) and kept in the outbox table.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    mail_from: str = "Anilay <no-reply@anilay.dev>"
    # Push (auth.md R30, R34): the Expo push API and its optional access token.
    expo_base_url: str = "https://exp.host/--/api/v2"
    expo_access_token: str | None = None

    @property
    def dialect(self) -> str:
        return "postgresql" if self.database_url.startswith("postgres") else "sqlite"

    @property
    def deployment(self) -> Literal["embedded", "scale_out"]:
        return "scale_out" if self.redis_url else "embedded"

    @property
    def runs_rest(self) -> bool:
        return self.role in ("all", "rest")

    @property
    def runs_gateway(self) -> bool:
        return self.role in ("all", "gateway")

    @property
    def runs_worker(self) -> bool:
        return self.role in ("all", "worker")

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `ANILAY_*`, `DATABASE_URL` and `REDIS_URL`; empty means default."""
        env = os.environ if env is None else env
        defaults = cls()

        def text(name: str, default: str | None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        def number(name: str, default: int | float, kind: type = int) -> int | float:
            raw = text(name, None)
            if raw is None:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from None

        role = text("ANILAY_ROLE", defaults.role)
        if role not in ROLES:
            raise SettingsError(f"ANILAY_ROLE must be one of {', '.join(ROLES)}, got {role!r}")
        worker_id = text("ANILAY_WORKER_ID", None)
        if worker_id is not None and not (worker_id.isdigit() and int(worker_id) < 1024):
            raise SettingsError(f"ANILAY_WORKER_ID must be 0..1023, got {worker_id!r}")
        origins = text("ANILAY_CORS_ORIGINS", "") or ""
        return cls(
            database_url=normalize_database_url(text("DATABASE_URL", defaults.database_url)),
            redis_url=text("REDIS_URL", None),
            host=text("ANILAY_HOST", defaults.host),
            port=int(number("ANILAY_PORT", defaults.port)),
            role=role,  # type: ignore[arg-type]
            worker_id=int(worker_id) if worker_id is not None else None,
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            log_level=text("ANILAY_LOG_LEVEL", defaults.log_level).lower(),
            access_log=text("ANILAY_ACCESS_LOG", "1") not in ("0", "false", "no"),
            max_body_bytes=int(number("ANILAY_MAX_BODY_BYTES", defaults.max_body_bytes)),
            gateway_log_maxlen=int(number("GATEWAY_LOG_MAXLEN", defaults.gateway_log_maxlen)),
            gateway_log_retention_s=int(
                number("GATEWAY_LOG_RETENTION_S", defaults.gateway_log_retention_s)
            ),
            gateway_resume_window_s=int(
                number("GATEWAY_RESUME_WINDOW_S", defaults.gateway_resume_window_s)
            ),
            gateway_drain_s=float(number("GATEWAY_DRAIN_S", defaults.gateway_drain_s, float)),
            argon2_time_cost=int(number("ANILAY_ARGON2_TIME_COST", defaults.argon2_time_cost)),
            argon2_memory_kib=int(number("ANILAY_ARGON2_MEMORY_KIB", defaults.argon2_memory_kib)),
            argon2_parallelism=int(
                number("ANILAY_ARGON2_PARALLELISM", defaults.argon2_parallelism)
            ),
            redis_timeout_s=float(
                number("ANILAY_REDIS_TIMEOUT_S", defaults.redis_timeout_s, float)
            ),
            db_pool_min=int(number("ANILAY_DB_POOL_MIN", defaults.db_pool_min)),
            jobs_poll_s=float(number("ANILAY_JOBS_POLL_S", defaults.jobs_poll_s, float)),
            outbox_poll_s=float(number("ANILAY_OUTBOX_POLL_S", defaults.outbox_poll_s, float)),
            db_pool_max=int(number("ANILAY_DB_POOL_MAX", defaults.db_pool_max)),
            commit=text("ANILAY_COMMIT", defaults.commit),
            data_dir=text("ANILAY_DATA_DIR", defaults.data_dir),
            environment=_choice(
                text("ANILAY_ENV", defaults.environment),
                ("production", "dev", "test"),
                "ANILAY_ENV",
            ),
            issuer=text("ANILAY_ISSUER", defaults.issuer),
            public_url=text("ANILAY_PUBLIC_URL", defaults.public_url).rstrip("/"),
            web_url=text("ANILAY_WEB_URL", defaults.web_url).rstrip("/"),
            key_encryption_key=text("ANILAY_KEY_ENCRYPTION_KEY", None),
            key_encryption_key_file=text(
                "ANILAY_KEY_ENCRYPTION_KEY_FILE", defaults.key_encryption_key_file
            ),
            registration_open=text("ANILAY_REGISTRATION_OPEN", "1") not in ("0", "false", "no"),
            trusted_proxies=tuple(
                p.strip()
                for p in (text("ANILAY_TRUSTED_PROXIES", "") or "").split(",")
                if p.strip()
            ),
            oauth_providers=_oauth_providers(
                text("ANILAY_OAUTH_PROVIDERS", "") or "",
                text("ANILAY_ENV", defaults.environment) or defaults.environment,
            ),
            oauth_redirect_uris=tuple(
                u.strip()
                for u in (text("ANILAY_OAUTH_REDIRECT_URIS", "") or "").split(",")
                if u.strip()
            ),
            smtp_host=text("ANILAY_SMTP_HOST", None),
            smtp_port=int(number("ANILAY_SMTP_PORT", defaults.smtp_port)),
            smtp_user=text("ANILAY_SMTP_USER", None),
            smtp_password=text("ANILAY_SMTP_PASSWORD", None),
            mail_from=text("ANILAY_MAIL_FROM", defaults.mail_from),
            expo_base_url=text("ANILAY_EXPO_BASE_URL", defaults.expo_base_url).rstrip("/"),
            expo_access_token=text("ANILAY_EXPO_ACCESS_TOKEN", None),
        )


def _oauth_providers(raw: str, environment: str) -> str:
    from server.oauth_providers import ProviderConfigError, parse_providers

    try:
        parse_providers(raw, environment)
    except ProviderConfigError as error:
        raise SettingsError(f"ANILAY_OAUTH_PROVIDERS: {error}") from None
    return raw


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def normalize_database_url(url: str) -> str:
    """Accept the URLs people paste (`postgres://`, `postgresql://`, `sqlite:///`)."""
    for plain, driver in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
        raise SettingsError("DATABASE_URL must be a postgresql:// or sqlite:// URL")
    return url
