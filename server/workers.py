"""Background loops a process runs beside its requests.

- the worker-id lease (scale-out): every process mints snowflakes with its own worker id;
- the outbox drainer (worker role): appends events that waited for Redis, in order;
- the log trimmer (worker role): applies the log's retention window;
- the outbox watcher (rest role): stops routing to the outbox once it is empty.
- the clock-driven domain sweeps (worker role, while settings.timed_sweeps): expiries,
  rotation graces, account deletion, push receipts, list history.

Each loop records its last run in `services.sweepers` for the staff health view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable

from server.ids import MAX_WORKER_ID
from server.jobs import run_due_jobs
from server.redis_client import REDIS_DOWN_ERRORS
from server.services import Services

log = logging.getLogger("anilay.workers")

WORKER_LEASE_KEY = "anilay:worker-id:{}"
WORKER_LEASE_TTL_S = 60
WORKER_LEASE_RENEW_S = 20
LOG_TRIM_EVERY_S = 5.0
KEYS_REFRESH_S = 30.0
KEYS_ROTATE_CHECK_S = 60.0


async def lease_worker_id(services: Services, background: list[asyncio.Task]) -> int:
    """This process's snowflake worker id: from settings, else leased from Redis, else 0.

    The lease is a Redis key held with a TTL and renewed; two live processes can never hold
    the same id, so their snowflakes never collide.
    """
    settings = services.settings
    if settings.worker_id is not None:
        return settings.worker_id
    if services.redis is None:
        return 0
    token = f"{os.getpid()}:{random.random()}"
    start = random.randrange(MAX_WORKER_ID + 1)
    for offset in range(MAX_WORKER_ID + 1):
        candidate = (start + offset) % (MAX_WORKER_ID + 1)
        key = WORKER_LEASE_KEY.format(candidate)
        if await services.redis.set(key, token, nx=True, ex=WORKER_LEASE_TTL_S):
            background.append(asyncio.create_task(_renew_lease(services, key, token)))
            return candidate
    raise RuntimeError("all 1024 snowflake worker ids are leased")


async def _renew_lease(services: Services, key: str, token: str) -> None:
    assert services.redis is not None
    while True:
        await asyncio.sleep(WORKER_LEASE_RENEW_S)
        try:
            holder = await services.redis.get(key)
            if holder is None or holder.decode() == token:
                await services.redis.set(key, token, ex=WORKER_LEASE_TTL_S)
            else:
                log.critical("worker id lease %s taken over; ids may collide", key)
        except REDIS_DOWN_ERRORS as error:
            log.warning("could not renew worker id lease: %s", error)


def _loop(
    services: Services, name: str, every_s: float, step: Callable[[], Awaitable[object]]
) -> asyncio.Task:
    async def run() -> None:
        record = services.sweepers.setdefault(name, {"last_run_at": None, "last_status": None})
        while True:
            try:
                await step()
                record["last_status"] = "ok"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a failing sweep is reported and retried, never fatal
                record["last_status"] = "fail"
                log.warning("sweeper %s failed: %s", name, error)
            record["last_run_at"] = time.time()
            await asyncio.sleep(every_s)

    return asyncio.create_task(run(), name=f"sweeper:{name}")


def start_loop(
    services: Services, name: str, every_s: float, step: Callable[[], Awaitable[object]]
) -> asyncio.Task:
    """A named periodic loop, reported in the staff health view (for the composition root)."""
    return _loop(services, name, every_s, step)


def _timed_sweeps(services: Services) -> list[tuple[str, float, Callable[[], Awaitable[object]]]]:
    """(name, period, step) of the clock-driven sweeps (settings.timed_sweeps)."""
    from models import api_keys, exports, push  # users.md R9, R10; auth.md R25, R33
    from models.anime import lists as anime_lists
    from models.users import deletion

    return [
        (
            "anime_list_sweep",
            anime_lists.SWEEP_EVERY_S,
            lambda: anime_lists.sweep_anime_lists(services),
        ),
        ("account_deletion", 60.0, lambda: deletion.sweep_deletions(services)),
        ("export_expiry", 60.0, lambda: exports.sweep_exports(services)),
        ("push_receipts", push.RECEIPTS_EVERY_S, lambda: push.sweep_receipts(services)),
        ("api_keys", api_keys.SWEEP_EVERY_S, lambda: api_keys.sweep_api_keys(services)),
    ]


def start_background(services: Services) -> list[asyncio.Task]:
    settings = services.settings
    tasks = []
    # Every process refreshes its view of the signing keys (rotations happen in the worker).
    tasks.append(
        _loop(services, "signing_keys_refresh", KEYS_REFRESH_S, services.keys.ensure_active)
    )
    if settings.runs_worker:
        tasks.append(_loop(services, "outbox", settings.outbox_poll_s, services.bus.drain_outbox))
        tasks.append(_loop(services, "log_trim", LOG_TRIM_EVERY_S, services.log.trim))
        tasks.append(_loop(services, "jobs", settings.jobs_poll_s, lambda: run_due_jobs(services)))
        tasks.append(
            _loop(services, "signing_keys_rotate", KEYS_ROTATE_CHECK_S, services.keys.rotate_step)
        )
        from models import push  # auth.md R30: delivery follows the outbox, not a clock

        tasks.append(asyncio.create_task(push.PushFanout(services).run(), name="push_fanout"))
        if settings.timed_sweeps:
            tasks.extend(_loop(services, *sweep) for sweep in _timed_sweeps(services))
    elif settings.runs_rest:
        tasks.append(
            _loop(services, "outbox_watch", settings.outbox_poll_s, services.bus.refresh_pending)
        )
    return tasks
