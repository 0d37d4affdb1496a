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
    bad_request = "bad_request"
    not_found = "not_found"
    method_not_allowed = "method_not_allowed"
    conflict = "conflict"
    too_large = "too_large"
    validation_failed = "validation_failed"
    rate_limited = "rate_limited"
    internal = "internal"
    not_ready = "not_ready"
    unavailable = "unavailable"
    # --- identity (auth.md, users.md) ---
    captcha_required = "captcha_required"
    invalid_oauth_code = "invalid_oauth_code"
    invalid_token = "invalid_token"
    token_expired = "token_expired"
    session_revoked = "session_revoked"
    invalid_credentials = "invalid_credentials"
    invalid_refresh_token = "invalid_refresh_token"
    refresh_token_reused = "refresh_token_reused"
    invalid_api_key = "invalid_api_key"
    banned = "banned"
    insufficient_scope = "insufficient_scope"
    wrong_password = "wrong_password"
    reauth_required = "reauth_required"
    registration_closed = "registration_closed"
    email_unverified = "email_unverified"
    identity_mismatch = "identity_mismatch"
    user_not_found = "user_not_found"
    provider_not_found = "provider_not_found"
    username_taken = "username_taken"
    username_reserved = "username_reserved"
    username_cooldown = "username_cooldown"
    email_taken = "email_taken"
    already_verified = "already_verified"
    no_email = "no_email"
    api_key_limit = "api_key_limit"
    name_taken = "name_taken"
    identity_in_use = "identity_in_use"
    provider_already_linked = "provider_already_linked"
    oauth_email_conflict = "oauth_email_conflict"
    last_login_method = "last_login_method"
    no_push_tokens = "no_push_tokens"
    deletion_pending = "deletion_pending"
    not_pending = "not_pending"
    export_in_progress = "export_in_progress"
    export_not_ready = "export_not_ready"
    weak_password = "weak_password"
    redirect_uri_not_allowed = "redirect_uri_not_allowed"
    invalid_push_token = "invalid_push_token"
    login_locked = "login_locked"
    export_cooldown = "export_cooldown"
    push_unavailable = "push_unavailable"
    # --- anime catalog (anime.md §1) ---
    anime_not_found = "anime_not_found"
    no_match = "no_match"
    # --- collections and comments (anime.md §3, §4) ---
    muted = "muted"
    own_comment = "own_comment"
    collection_limit = "collection_limit"
    collection_full = "collection_full"
    already_in_collection = "already_in_collection"
    order_mismatch = "order_mismatch"
    parent_deleted = "parent_deleted"
    comment_deleted = "comment_deleted"
    edit_window_closed = "edit_window_closed"
    # --- anime list (anime.md §2) ---
    entry_not_found = "entry_not_found"
    stale_entry = "stale_entry"
    stale_episodes = "stale_episodes"
    episode_limit = "episode_limit"
    not_aired = "not_aired"
    import_in_progress = "import_in_progress"
    max_depth = "max_depth"

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
    Code.bad_request: 400,
    Code.not_found: 404,
    Code.method_not_allowed: 405,
    Code.conflict: 409,
    Code.too_large: 413,
    Code.validation_failed: 422,
    Code.rate_limited: 429,
    Code.internal: 500,
    Code.not_ready: 503,
    Code.unavailable: 503,
    Code.captcha_required: 400,
    Code.invalid_oauth_code: 400,
    Code.invalid_token: 401,
    Code.token_expired: 401,
    Code.session_revoked: 401,
    Code.invalid_credentials: 401,
    Code.invalid_refresh_token: 401,
    Code.refresh_token_reused: 401,
    Code.invalid_api_key: 401,
    Code.banned: 403,
    Code.insufficient_scope: 403,
    Code.wrong_password: 403,
    Code.reauth_required: 403,
    Code.registration_closed: 403,
    Code.email_unverified: 403,
    Code.identity_mismatch: 403,
    Code.user_not_found: 404,
    Code.provider_not_found: 404,
    Code.username_taken: 409,
    Code.username_reserved: 409,
    Code.username_cooldown: 409,
    Code.email_taken: 409,
    Code.already_verified: 409,
    Code.no_email: 409,
    Code.api_key_limit: 409,
    Code.name_taken: 409,
    Code.identity_in_use: 409,
    Code.provider_already_linked: 409,
    Code.oauth_email_conflict: 409,
    Code.last_login_method: 409,
    Code.no_push_tokens: 409,
    Code.deletion_pending: 409,
    Code.not_pending: 409,
    Code.export_in_progress: 409,
    Code.export_not_ready: 409,
    Code.weak_password: 422,
    Code.redirect_uri_not_allowed: 422,
    Code.invalid_push_token: 422,
    Code.login_locked: 429,
    Code.export_cooldown: 429,
    Code.push_unavailable: 503,
    Code.anime_not_found: 404,
    Code.no_match: 404,
    Code.muted: 403,
    Code.own_comment: 403,
    Code.collection_limit: 409,
    Code.collection_full: 409,
    Code.already_in_collection: 409,
    Code.order_mismatch: 409,
    Code.parent_deleted: 409,
    Code.comment_deleted: 409,
    Code.edit_window_closed: 409,
    Code.entry_not_found: 404,
    Code.stale_entry: 409,
    Code.stale_episodes: 409,
    Code.episode_limit: 409,
    Code.not_aired: 409,
    Code.import_in_progress: 409,
    Code.max_depth: 422,
}

_TITLE: dict[Code, str] = {
    Code.malformed: "Malformed request",
    Code.unsupported_media_type: "Unsupported media type",
    Code.unauthorized: "Authentication required",
    Code.forbidden: "Forbidden",
    Code.bot_not_allowed: "Not available to bots",
    Code.bad_request: "Bad request",
    Code.not_found: "Not found",
    Code.method_not_allowed: "Method not allowed",
    Code.conflict: "Conflict",
    Code.too_large: "Request too large",
    Code.validation_failed: "Validation failed",
    Code.rate_limited: "Too many requests",
    Code.internal: "Internal error",
    Code.not_ready: "Not ready",
    Code.unavailable: "Service unavailable",
    Code.captcha_required: "Captcha required",
    Code.invalid_oauth_code: "Invalid OAuth code",
    Code.invalid_token: "Invalid token",
    Code.token_expired: "Token expired",
    Code.session_revoked: "Session revoked",
    Code.invalid_credentials: "Invalid credentials",
    Code.invalid_refresh_token: "Invalid refresh token",
    Code.refresh_token_reused: "Refresh token reused",
    Code.invalid_api_key: "Invalid API key",
    Code.banned: "Account banned",
    Code.insufficient_scope: "Insufficient scope",
    Code.wrong_password: "Wrong password",
    Code.reauth_required: "Recent authentication required",
    Code.registration_closed: "Registration closed",
    Code.email_unverified: "Email not verified",
    Code.identity_mismatch: "Identity mismatch",
    Code.user_not_found: "User not found",
    Code.provider_not_found: "Provider not found",
    Code.username_taken: "Username taken",
    Code.username_reserved: "Username reserved",
    Code.username_cooldown: "Username change on cooldown",
    Code.email_taken: "Email taken",
    Code.already_verified: "Already verified",
    Code.no_email: "No email",
    Code.api_key_limit: "API key limit reached",
    Code.name_taken: "Name taken",
    Code.identity_in_use: "Identity in use",
    Code.provider_already_linked: "Provider already linked",
    Code.oauth_email_conflict: "Email belongs to another account",
    Code.last_login_method: "Last login method",
    Code.no_push_tokens: "No push tokens",
    Code.deletion_pending: "Deletion pending",
    Code.not_pending: "No deletion pending",
    Code.export_in_progress: "Export in progress",
    Code.export_not_ready: "Export not ready",
    Code.weak_password: "Weak password",
    Code.redirect_uri_not_allowed: "Redirect URI not allowed",
    Code.invalid_push_token: "Invalid push token",
    Code.login_locked: "Login locked",
    Code.export_cooldown: "Export cooldown",
    Code.push_unavailable: "Push unavailable",
    Code.anime_not_found: "Anime not found",
    Code.no_match: "No title matches",
    Code.muted: "Muted",
    Code.own_comment: "Your own comment",
    Code.collection_limit: "Collection limit reached",
    Code.collection_full: "Collection full",
    Code.already_in_collection: "Already in the collection",
    Code.order_mismatch: "Order does not match the items",
    Code.parent_deleted: "Parent comment deleted",
    Code.comment_deleted: "Comment deleted",
    Code.edit_window_closed: "Edit window closed",
    Code.entry_not_found: "Not in your list",
    Code.stale_entry: "Entry changed",
    Code.stale_episodes: "Episode count changed",
    Code.episode_limit: "No episode left",
    Code.not_aired: "Not aired yet",
    Code.import_in_progress: "Import in progress",
    Code.max_depth: "Reply too deep",
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
