"""`anilay serve | migrate | seed`: the command line of every process role."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvicorn

from server.settings import ROLES, Settings, SettingsError

# uvicorn's websocket implementation. wsproto keeps an idle socket in ~4 KB less than the
# `websockets` ones (no per-connection keepalive task; Engine.IO pings on its own), and the
# legacy `websockets` one is deprecated. tests/bench/gateway_idle.py measures it.
WEBSOCKETS = "wsproto"


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides = {k: v for k in ("role", "host", "port") if (v := getattr(args, k, None))}
    return settings.replace(**overrides) if overrides else settings


def serve(settings: Settings) -> None:
    from server.app import create_app
    from server.observability import configure_logging

    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws=WEBSOCKETS,
        # The app reads X-Forwarded-For itself, trusting only ANILAY_TRUSTED_PROXIES (R19).
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.gateway_drain_s) + 5,
    )
    DrainingServer(config, app.services).run()


class DrainingServer(uvicorn.Server):
    """On SIGTERM, first drain: readiness turns 503 (the load balancer stops sending),
    sockets are asked to reconnect elsewhere, then uvicorn's usual graceful shutdown."""

    def __init__(self, config: uvicorn.Config, services) -> None:
        super().__init__(config)
        self.services = services
        self._draining: asyncio.Future | None = None

    def handle_exit(self, sig: int, frame) -> None:
        if sig != signal.SIGTERM or self._draining is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        asyncio.get_event_loop().call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        self.services.draining = True
        gateway = self.services.gateway
        try:
            if gateway is not None and self.services.settings.runs_gateway:
                await gateway.drain(self.services.settings.gateway_drain_s)
        finally:
            self.should_exit = True


def migrate(settings: Settings) -> None:
    from server.migrate import upgrade

    upgrade(settings.database_url)
    print(f"database at head ({settings.dialect})")


def seed(settings: Settings) -> None:
    from models.demo import seed_demo

    summary = asyncio.run(seed_demo(settings))
    print(
        "seeded: " + ", ".join(f"{k} {v}" for k, v in summary.items())
        if summary
        else "seeded: nothing new"
    )


def create_admin(settings: Settings, username: str, email: str, password: str) -> None:
    from models.auth.bootstrap import create_admin_account

    user_id = asyncio.run(create_admin_account(settings, username, email, password))
    print(f"admin {username} ready (id {user_id})")


def rotate_keys(settings: Settings) -> None:
    """Emergency rotation: a fresh key signs from now on; every access token dies."""
    from models.auth.bootstrap import emergency_rotate

    kid = asyncio.run(emergency_rotate(settings))
    print(f"signing key {kid} is active; every other key is retired")


def catalog_import(settings: Settings, args: argparse.Namespace) -> None:
    from models.anime.importer import run_import_command

    report = asyncio.run(
        run_import_command(
            settings,
            args.source,
            ids=args.ids,
            pages=args.pages,
            ongoing=args.ongoing,
            force=args.force,
        )
    )
    print(report.summary())
    for problem in report.problems:
        print(f"  {problem.ref}: {problem.reason}", file=sys.stderr)


def _id_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of ids") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="anilay", description="Anilay backend")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve HTTP + Socket.IO (and sweepers)")
    run.add_argument("--role", choices=ROLES, help="which parts this process runs")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    commands.add_parser("migrate", help="bring the database schema to the code's head")
    commands.add_parser("seed", help="load demo data (idempotent)")
    admin = commands.add_parser("create-admin", help="create (or promote) an admin account")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", help="prompted for when omitted")
    commands.add_parser("rotate-keys", help="emergency signing-key rotation")
    catalog = commands.add_parser("catalog", help="the anime catalog").add_subparsers(
        dest="catalog_command", required=True
    )
    load = catalog.add_parser("import", help="import Shikimori-format anime (file, dir or URL)")
    load.add_argument("source", help="a JSON file, a directory of them, or a base URL")
    load.add_argument("--ids", type=_id_list, default=[], help="ids to pull (URL) or force")
    load.add_argument("--pages", type=int, default=0, help="browse pages to pull (URL)")
    load.add_argument("--ongoing", action="store_true", help="refresh local anons/ongoing (URL)")
    load.add_argument("--force", action="store_true", help="import tombstoned --ids too")
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
    elif args.command == "create-admin":
        import getpass

        password = args.password or getpass.getpass("Password: ")
        create_admin(settings, args.username, args.email, password)
    elif args.command == "rotate-keys":
        rotate_keys(settings)
    elif args.command == "catalog":
        catalog_import(settings, args)


if __name__ == "__main__":
    main()
