"""A local Shikimori-compatible API on a real uvicorn, for the importer's remote pulls.

It serves `GET /api/animes` (browse pages by id), `/api/animes/{id}` and its `related`,
`similar`, `screenshots` and `videos` sub-resources from records a test adds, and records
every request it receives (path, query, User-Agent, arrival time on the test process's
monotonic clock) so a test can check pacing, backoff and headers. `script(path, ...)` queues
canned answers (e.g. a 429 with Retry-After) that a path returns before its real one.

    async with running_fake_shikimori() as fake:
        fake.add({"id": 1, "name": "Cowboy Bebop", ...}, related=[...])
        fake.script("/api/animes/1", Scripted(429, {"Retry-After": "1"}))
        report = await pull_remote(db, fake.url, version="test", ids=[1])
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclasses.dataclass(frozen=True)
class Hit:
    path: str
    query: dict[str, str]
    user_agent: str
    at: float  # time.monotonic() on arrival


@dataclasses.dataclass(frozen=True)
class Scripted:
    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: Any = None


class FakeShikimori:
    def __init__(self) -> None:
        self.url = ""
        self.animes: dict[int, dict[str, Any]] = {}
        self.subresources: dict[tuple[int, str], Any] = {}
        self.hits: list[Hit] = []
        self.scripted: dict[str, collections.deque[Scripted]] = collections.defaultdict(
            collections.deque
        )
        self.app = Starlette(
            routes=[
                Route("/api/animes", self._browse),
                Route("/api/animes/{anime_id:int}", self._anime),
                Route("/api/animes/{anime_id:int}/{name}", self._subresource),
            ]
        )

    # --- what a test sets up ---
    def add(
        self,
        record: dict[str, Any],
        *,
        related: list[dict[str, Any]] | None = None,
        similar: list[dict[str, Any]] | None = None,
        screenshots: list[dict[str, Any]] | None = None,
        videos: list[dict[str, Any]] | None = None,
    ) -> None:
        self.animes[record["id"]] = record
        for name, value in (
            ("related", related),
            ("similar", similar),
            ("screenshots", screenshots),
            ("videos", videos),
        ):
            self.subresources[(record["id"], name)] = value or []

    def script(self, path: str, *answers: Scripted) -> None:
        self.scripted[path].extend(answers)

    def hits_to(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    # --- the API ---
    def _record(self, request: Request) -> Response | None:
        self.hits.append(
            Hit(
                path=request.url.path,
                query=dict(request.query_params),
                user_agent=request.headers.get("user-agent", ""),
                at=time.monotonic(),
            )
        )
        queue = self.scripted.get(request.url.path)
        if queue:
            answer = queue.popleft()
            if answer.body is None:
                return Response(status_code=answer.status, headers=answer.headers)
            return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
        return None

    async def _browse(self, request: Request) -> Response:
        scripted = self._record(request)
        if scripted is not None:
            return scripted
        page = int(request.query_params.get("page", "1"))
        limit = min(50, int(request.query_params.get("limit", "50")))
        ids = sorted(self.animes)[(page - 1) * limit : page * limit]
        return JSONResponse(
            [{"id": i, "name": self.animes[i].get("name"), "kind": "tv"} for i in ids]
        )

    async def _anime(self, request: Request) -> Response:
        scripted = self._record(request)
        if scripted is not None:
            return scripted
        record = self.animes.get(request.path_params["anime_id"])
        if record is None:
            return JSONResponse({"message": "Not found", "code": 404}, status_code=404)
        return JSONResponse(record)

    async def _subresource(self, request: Request) -> Response:
        scripted = self._record(request)
        if scripted is not None:
            return scripted
        key = (request.path_params["anime_id"], request.path_params["name"])
        if key not in self.subresources:
            return JSONResponse({"message": "Not found", "code": 404}, status_code=404)
        return JSONResponse(self.subresources[key])


@contextlib.asynccontextmanager
async def running_fake_shikimori() -> AsyncIterator[FakeShikimori]:
    from tests.conftest import start_live_server, stop_live_server

    fake = FakeShikimori()
    live = await start_live_server(None, app=fake.app)  # type: ignore[arg-type]
    fake.url = live.url
    try:
        yield fake
    finally:
        await stop_live_server(live)
