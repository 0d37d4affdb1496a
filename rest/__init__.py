"""The HTTP API: one module per domain, each ending with `routes = [...]`."""

from __future__ import annotations

from rest import (
    anime,
    anime_list,
    api_keys,
    auth,
    collections,
    comments,
    docs,
    health,
    oauth,
    push,
    users,
)
from server.http import Endpoint

DOMAINS = (
    health,
    auth,
    oauth,
    api_keys,
    push,
    users,
    anime,
    anime_list,
    collections,
    comments,
    docs,
)


def endpoints() -> list[Endpoint]:
    """Every endpoint of the API, in a stable order (the OpenAPI document sorts paths)."""
    return [route for module in DOMAINS for route in module.routes]
