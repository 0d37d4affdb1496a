"""Settings come from the environment once, with clear refusals for bad values."""

from __future__ import annotations

import pytest

from server.settings import Settings, SettingsError


def test_defaults_are_the_embedded_deployment():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///./var/anilay.db"
    assert settings.redis_url is None
    assert settings.deployment == "embedded"
    assert (settings.host, settings.port, settings.role) == ("127.0.0.1", 8000, "all")


def test_production_urls_are_normalised_to_their_async_drivers():
    settings = Settings.from_env(
        {"DATABASE_URL": "postgres://u@db/anilay", "REDIS_URL": "redis://cache:6379/0"}
    )
    assert settings.database_url == "postgresql+asyncpg://u@db/anilay"
    assert settings.dialect == "postgresql"
    assert settings.deployment == "scale_out"


def test_production_password_hashing_uses_owasp_argon2id_parameters():
    """Tests lower the cost; production must not (OWASP: m=19 MiB, t=2, p=1)."""
    settings = Settings.from_env({})
    assert settings.argon2_memory_kib == 19_456
    assert settings.argon2_time_cost == 2
    assert settings.argon2_parallelism == 1


@pytest.mark.parametrize(
    "env",
    [
        {"ANILAY_PORT": "eighty"},
        {"ANILAY_ROLE": "everything"},
        {"ANILAY_WORKER_ID": "1024"},
        {"ANILAY_WORKER_ID": "-1"},
        {"DATABASE_URL": "mysql://x"},
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env):
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert next(iter(env)) in str(error.value)


def test_roles_decide_what_a_process_runs():
    assert Settings(role="rest").runs_rest and not Settings(role="rest").runs_gateway
    assert Settings(role="worker").runs_worker and not Settings(role="worker").runs_rest
    assert all((Settings().runs_rest, Settings().runs_gateway, Settings().runs_worker))
