"""`anilay serve | migrate | seed`: the command line of every process role."""

from __future__ import annotations

import argparse
import asyncio
import sys

from server.settings import ROLES, Settings, SettingsError


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides = {k: v for k in ("role", "host", "port") if (v := getattr(args, k, None))}
    return settings.replace(**overrides) if overrides else settings


def serve(settings: Settings, workers: int = 1) -> None:
    import uvicorn

    from server.app import create_app
    from server.observability import configure_logging

    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=int(settings.gateway_drain_s) + 5,
    )


def migrate(settings: Settings) -> None:
    from server.migrate import upgrade

    upgrade(settings.database_url)
    print(f"database at head ({settings.dialect})")


def seed(settings: Settings) -> None:
    from server.seed import seed_demo

    summary = asyncio.run(seed_demo(settings))
    print(
        "seeded: " + ", ".join(f"{k} {v}" for k, v in summary.items())
        if summary
        else "seeded: nothing new"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="anilay", description="Anilay backend")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve HTTP + Socket.IO (and sweepers)")
    run.add_argument("--role", choices=ROLES, help="which parts this process runs")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    commands.add_parser("migrate", help="bring the database schema to the code's head")
    commands.add_parser("seed", help="load demo data (idempotent)")
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as error:
        print(f"anilay: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "serve":
        serve(settings)
    elif args.command == "migrate":
        migrate(settings)
    elif args.command == "seed":
        seed(settings)


if __name__ == "__main__":
    main()
