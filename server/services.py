"""What a running process holds: built once by `create_app`, handed to every operation."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from server.auth import Resolver
from server.bus import Bus
from server.cache import Cache
from server.db import Database
from server.log import EventLog
from server.presence import PresenceStore
from server.ratelimit import RateLimiter
from server.settings import Settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis


@dataclasses.dataclass
class Services:
    settings: Settings
    db: Database
    log: EventLog
    bus: Bus
    cache: Cache
    limiter: RateLimiter
    redis: aioredis.Redis | None = None
    presence: PresenceStore | None = None
    started_at: float = dataclasses.field(default_factory=time.time)
    ready: bool = False
    draining: bool = False
    # Filled by the gateway when this process serves sockets (health details read it).
    gateway: Any = None
    # Turns credentials into an Identity; wired by the composition root (models.auth).
    resolve_identity: Resolver | None = None
    # Domain services built at startup (password hasher, key ring, mailer, ...).
    passwords: Any = None
    keys: Any = None
    sweepers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
