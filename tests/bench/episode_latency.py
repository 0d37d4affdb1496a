"""How long `POST /anime-list/{anime_id}/episode` spends in its operation, against a bare
conditional UPDATE measured in the same run, on PostgreSQL (if reachable) and on SQLite.

For each engine a scratch database is migrated and one process's services are built as the
server builds them (`server.app.build_services`: PostgreSQL + Redis event log when Redis
answers, else SQLite + the in-process log). Then, one request at a time:

- **baseline**: `UPDATE bench_counter SET n = n + 1, rev = :rev WHERE id = :id AND n < :max
  RETURNING n` through the same `databases` pool (the least an increment can cost);
- **baseline in a transaction**: the same UPDATE inside `db.transaction()` (what any write
  with a history row and an after-commit event must at least pay);
- **increment**: `models.anime.lists.do_increment_episode` — load the anime, read the entry,
  the conditional increment, the history row, and ANIME_LIST_UPDATE + ANIME_EPISODE_WATCHED
  published after the commit — on entries spread over several users;
- **contended**: the same operation, 8 at a time on one entry (asyncio.gather), per-call.

Rounds alternate baseline and increment so drift hits both; p50 and p99 over all samples
are printed with the ratio increment/baseline.

    python tests/bench/episode_latency.py [--samples 2000] [--rounds 4] [--engines pg,sqlite]

Environment: ANILAY_BENCH_POSTGRES_URL (admin URL, default postgresql://postgres@127.0.0.1:5432
/postgres; a database `anilay_bench_lists` is dropped and created), ANILAY_BENCH_REDIS_URL
(default redis://127.0.0.1:6379/11; flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import sqlalchemy as sa  # noqa: E402

import models  # noqa: E402, F401
from models.anime.catalog_tables import anime  # noqa: E402
from models.anime.lists import anime_list_entry, do_increment_episode  # noqa: E402
from server.app import build_services  # noqa: E402
from server.ids import new_id  # noqa: E402
from server.migrate import upgrade_async  # noqa: E402
from server.settings import Settings  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "ANILAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PG_DB = "anilay_bench_lists"
REDIS_URL = os.environ.get("ANILAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
ANIME_ID = 424_242
BOUND = 9999
CONTENTION = 8

bench_meta = sa.MetaData()
bench_counter = sa.Table(
    "bench_counter",
    bench_meta,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("rev", sa.BigInteger, nullable=False),
)


async def _reachable_pg() -> bool:
    try:
        connection = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except Exception:
        return False
    await connection.close()
    return True


async def _reachable_redis() -> bool:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
        await client.flushdb()
        return True
    except Exception:
        return False
    finally:
        await client.aclose()


async def _fresh_pg() -> str:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
            "AND pid <> pg_backend_pid()",
            PG_DB,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{PG_DB}"')
        await admin.execute(f'CREATE DATABASE "{PG_DB}"')
    finally:
        await admin.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + (
        "/" + PG_DB
    )


async def _setup(services) -> None:
    db = services.db
    now = datetime.now(UTC)
    await db.execute(
        anime.insert().values(
            id=ANIME_ID,
            name="Bench",
            russian=None,
            english=None,
            japanese=None,
            synonyms=[],
            kind="tv",
            status="ongoing",
            rating="pg_13",
            episodes=0,  # unknown: B = 9999, so one entry takes thousands of increments
            episodes_aired=0,
            duration=24,
            aired_on=date(2024, 1, 1),
            released_on=None,
            year=2024,
            season="winter_2024",
            score_x100=0,
            members=0,
            image_original=None,
            image_preview=None,
            image_x96=None,
            image_x48=None,
            description=None,
            franchise=None,
            next_episode_at=None,
            myanimelist_id=None,
            search_text="bench",
            origin="local",
            locked_fields=[],
            source_updated_at=None,
            imported_at=now,
        )
    )
    await db.execute("DROP TABLE IF EXISTS bench_counter")
    for statement in bench_meta.sorted_tables:
        await db.execute(sa.schema.CreateTable(statement))


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _timed(operation, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await operation()
        out.append(time.perf_counter() - started)
    return out


async def run_engine(name: str, settings: Settings, samples: int, rounds: int) -> dict:
    await upgrade_async(settings.database_url)
    services = build_services(settings)
    await services.db.connect()
    try:
        await _setup(services)
        db = services.db
        counter_id = 1
        await db.execute(bench_counter.insert().values(id=counter_id, n=0, rev=0))

        async def bare() -> None:
            row = await db.fetch_one(
                bench_counter.update()
                .where(bench_counter.c.id == counter_id, bench_counter.c.n < 10**9)
                .values(n=bench_counter.c.n + 1, rev=new_id())
                .returning(bench_counter.c.n)
            )
            assert row is not None

        async def bare_in_transaction() -> None:
            async with db.transaction():
                await bare()

        users = iter(range(10**6, 2 * 10**6))
        state = {"user": next(users), "done": 0}

        async def increment() -> None:
            if state["done"] >= BOUND - 1:  # move to a fresh entry before the bound
                state["user"], state["done"] = next(users), 0
            await do_increment_episode(services, state["user"], ANIME_ID)
            state["done"] += 1

        per_round = max(1, samples // rounds)
        for warm in (bare, bare_in_transaction, increment):
            await _timed(warm, 100)
        results: dict[str, list[float]] = {"bare": [], "bare_tx": [], "increment": []}
        for _ in range(rounds):
            results["bare"] += await _timed(bare, per_round)
            results["bare_tx"] += await _timed(bare_in_transaction, per_round)
            results["increment"] += await _timed(increment, per_round)

        contended: list[float] = []
        contended_user = next(users)

        async def one() -> float:
            started = time.perf_counter()
            await do_increment_episode(services, contended_user, ANIME_ID)
            return time.perf_counter() - started

        for _ in range(max(1, per_round // CONTENTION)):
            contended += await asyncio.gather(*(one() for _ in range(CONTENTION)))
        results["contended"] = contended
        episodes = await db.fetch_val(
            sa.select(anime_list_entry.c.episodes).where(
                anime_list_entry.c.user_id == contended_user
            )
        )
        assert episodes == len(contended), (episodes, len(contended))  # nothing lost
        return {"engine": name, **results}
    finally:
        await services.log.close()
        if services.redis is not None:
            await services.redis.aclose()
        await services.db.disconnect()


def report(result: dict) -> None:
    base50 = statistics.median(result["bare"])
    base99 = _percentile(result["bare"], 0.99)
    print(f"\n{result['engine']}")
    print(f"  {'operation':<34} {'p50 ms':>8} {'p99 ms':>8} {'x p50':>7} {'x p99':>7}")
    labels = {
        "bare": "bare conditional UPDATE",
        "bare_tx": "bare UPDATE in a transaction",
        "increment": "L5 increment (do_increment_episode)",
        "contended": f"L5 increment, {CONTENTION} racing one entry",
    }
    for key, label in labels.items():
        values = result[key]
        p50, p99 = statistics.median(values), _percentile(values, 0.99)
        print(
            f"  {label:<34} {p50 * 1000:8.3f} {p99 * 1000:8.3f} "
            f"{p50 / base50:7.2f} {p99 / base99:7.2f}"
        )


async def main(samples: int, rounds: int, engines: list[str]) -> int:
    results = []
    scratch = tempfile.mkdtemp(prefix="anilay-bench-lists-")
    if "pg" in engines:
        if await _reachable_pg():
            redis_url = REDIS_URL if await _reachable_redis() else None
            url = await _fresh_pg()
            settings = Settings(
                database_url=url,
                redis_url=redis_url,
                access_log=False,
                key_encryption_key_file=os.path.join(scratch, "kek"),
            )
            label = "PostgreSQL" + (" + Redis event log" if redis_url else " + in-process log")
            results.append(await run_engine(label, settings, samples, rounds))
        else:
            print("PostgreSQL unreachable: skipped", file=sys.stderr)
    if "sqlite" in engines:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{scratch}/bench.db",
            access_log=False,
            key_encryption_key_file=os.path.join(scratch, "kek"),
        )
        results.append(await run_engine("SQLite + in-process log", settings, samples, rounds))
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"episode increment latency: {samples} samples per operation, {rounds} rounds")
    print("x = ratio to the bare conditional UPDATE on the same engine and pool")
    for result in results:
        report(result)
    return 0 if results else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--engines", default="pg,sqlite")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.samples, arguments.rounds, arguments.engines.split(","))))
