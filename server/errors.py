"""One error type for the whole product.

Domain code raises `ApiError(Code.X, ...)`; HTTP renders it once as RFC 9457 problem details
and the gateway renders it once as an ack/connect error. Nothing else turns into a response,
and an unexpected exception becomes a 500 with no detail (the bug is logged, not shown).
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

ERROR_TYPE_BASE = "https://anilay.dev/errors/"
PROBLEM_JSON = "application/problem+json"


class Code(enum.StrEnum):
    """Every error code the API can answer with, and its HTTP status."""

    malformed = "malformed"
    unsupported_media_type = "unsupported_media_type"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    bot_not_allowed = "bot_not_allowed"
    not_found = "not_found"
    method_not_allowed = "method_not_allowed"
    conflict = "conflict"
    too_large = "too_large"
    validation_failed = "validation_failed"
    rate_limited = "rate_limited"
    internal = "internal"
    not_ready = "not_ready"
    unavailable = "unavailable"

    @property
    def status(self) -> int:
        return _STATUS[self]

    @property
    def title(self) -> str:
        return _TITLE[self]


_STATUS: dict[Code, int] = {
    Code.malformed: 400,
    Code.unsupported_media_type: 415,
    Code.unauthorized: 401,
    Code.forbidden: 403,
    Code.bot_not_allowed: 403,
    Code.not_found: 404,
    Code.method_not_allowed: 405,
    Code.conflict: 409,
    Code.too_large: 413,
    Code.validation_failed: 422,
    Code.rate_limited: 429,
    Code.internal: 500,
    Code.not_ready: 503,
    Code.unavailable: 503,
}

_TITLE: dict[Code, str] = {
    Code.malformed: "Malformed request",
    Code.unsupported_media_type: "Unsupported media type",
    Code.unauthorized: "Authentication required",
    Code.forbidden: "Forbidden",
    Code.bot_not_allowed: "Not available to bots",
    Code.not_found: "Not found",
    Code.method_not_allowed: "Method not allowed",
    Code.conflict: "Conflict",
    Code.too_large: "Request too large",
    Code.validation_failed: "Validation failed",
    Code.rate_limited: "Too many requests",
    Code.internal: "Internal error",
    Code.not_ready: "Not ready",
    Code.unavailable: "Service unavailable",
}


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, as every error response carries them."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    errors: list[FieldError] | None = None


class ApiError(Exception):
    """An error the client should see: a code, a human detail, optional field errors.

    `extra` members travel as problem-details extension members (e.g. `checks` on 503).
    `headers` are added to the HTTP response (e.g. `Retry-After` on 429).
    """

    def __init__(
        self,
        code: Code,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail or code.title)
        self.code = code
        self.detail = detail
        self.errors = errors
        self.extra = extra or {}
        self.headers = headers or {}
        self.status = status or code.status

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": ERROR_TYPE_BASE + self.code.value,
            "title": self.code.title,
            "status": self.status,
            "code": self.code.value,
        }
        if self.detail:
            body["detail"] = self.detail
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        for key, value in self.extra.items():
            body.setdefault(key, value)
        return body

    def to_ack(self) -> dict[str, Any]:
        """The Socket.IO rendering: `{"ok": false, "error": {"code", "message"}}`."""
        return {"ok": False, "error": {"code": self.code.value, "message": str(self)}}


def validation_error(field: str, message: str) -> ApiError:
    return ApiError(
        Code.validation_failed,
        f"{field}: {message}",
        errors=[FieldError(field, message)],
    )
