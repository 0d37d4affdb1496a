"""A local fake of Expo's push API (auth.md R34), served by a real uvicorn on a free port.

It records every request and answers as scripted:
- `/push/send`: one `ok` ticket per message, except for tokens listed in `ticket_errors`
  (`{"ExponentPushToken[...]": "DeviceNotRegistered"}`) or, for one send each, in
  `ticket_errors_once`; more than 100 messages is a 400 as at Expo;
- whole-request failures queued with `fail_next(status, retry_after=...)` (429, 500, ...);
- `/push/getReceipts`: `ok` receipts, except for tokens listed in `receipt_errors`; ids in
  `receipts_pending` get no receipt yet.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    status: int


@dataclass
class FakeExpo:
    requests: list[Recorded] = field(default_factory=list)
    ticket_errors: dict[str, str] = field(default_factory=dict)
    ticket_errors_once: dict[str, str] = field(default_factory=dict)
    receipt_errors: dict[str, str] = field(default_factory=dict)
    receipts_pending: set[str] = field(default_factory=set)
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    # receipt id -> the token its message went to
    issued: dict[str, str] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    url: str = ""
    _live: Any = None

    # --- scripting ---------------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.failures.extend([(status, headers)] * times)

    def reset(self) -> None:
        self.requests.clear()
        self.ticket_errors.clear()
        self.ticket_errors_once.clear()
        self.receipt_errors.clear()
        self.receipts_pending.clear()
        self.failures.clear()
        self.issued.clear()

    # --- what was received -------------------------------------------------------------
    def sends(self, status: int | None = 200) -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.path == "/push/send" and (status is None or r.status == status)
        ]

    def delivered(self) -> list[dict[str, Any]]:
        """Messages Expo accepted (in requests answered 200)."""
        return [message for r in self.sends() for message in r.body]

    def receipt_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/push/getReceipts"]

    async def wait_for(self, predicate, within_s: float = 10.0) -> None:
        deadline = time.monotonic() + within_s
        while not predicate():
            if time.monotonic() > deadline:
                seen = [(r.path, r.status, r.body) for r in self.requests]
                raise AssertionError(f"fake Expo: condition not met; saw {seen}"[:2000])
            await asyncio.sleep(0.02)

    # --- the app -----------------------------------------------------------------------
    async def _send(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        failure = self._record(request, "/push/send", body)
        if failure is not None:
            return failure
        messages = body if isinstance(body, list) else [body]
        if len(messages) > 100:
            self.requests[-1].status = 400
            return JSONResponse(
                {"errors": [{"code": "PUSH_TOO_MANY_NOTIFICATIONS", "message": "> 100"}]},
                status_code=400,
            )
        tickets = []
        for message in messages:
            token = message["to"]
            code = self.ticket_errors_once.pop(token, None) or self.ticket_errors.get(token)
            if code:
                tickets.append({"status": "error", "message": code, "details": {"error": code}})
            else:
                receipt_id = f"receipt-{next(self._ids)}"
                self.issued[receipt_id] = token
                tickets.append({"status": "ok", "id": receipt_id})
        return JSONResponse({"data": tickets})

    async def _receipts(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        failure = self._record(request, "/push/getReceipts", body)
        if failure is not None:
            return failure
        data = {}
        for receipt_id in body["ids"]:
            if receipt_id in self.receipts_pending or receipt_id not in self.issued:
                continue
            code = self.receipt_errors.get(self.issued[receipt_id])
            data[receipt_id] = (
                {"status": "error", "message": code, "details": {"error": code}}
                if code
                else {"status": "ok"}
            )
        return JSONResponse({"data": data})

    def _record(self, request: Request, path: str, body: Any) -> JSONResponse | None:
        status, headers = self.failures.pop(0) if self.failures else (200, {})
        self.requests.append(Recorded(path, dict(request.headers), body, time.monotonic(), status))
        if status != 200:
            return JSONResponse({"errors": [{"code": "FAKE"}]}, status_code=status, headers=headers)
        return None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/push/send", self._send, methods=["POST"]),
                Route("/push/getReceipts", self._receipts, methods=["POST"]),
            ]
        )

    async def start(self) -> FakeExpo:
        from tests.conftest import start_live_server

        self._live = await start_live_server(None, app=self.app())  # type: ignore[arg-type]
        self.url = self._live.url
        return self

    async def stop(self) -> None:
        from tests.conftest import stop_live_server

        if self._live is not None:
            await stop_live_server(self._live)
