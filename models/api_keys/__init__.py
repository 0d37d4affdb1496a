"""API keys for bots (auth.md K1–K6, R21–R26).

`tables` holds the table and the limits, `shapes` the ApiKey shape and the events, `state`
the cached key state and the Bot Identity, `manage` the operations and sweeps.

A key is `anl_<prefix>_<secret>`: the prefix (8 × [a-z0-9], unique) finds the row, the secret
is kept only as SHA-256 and compared in constant time. A key acts as its owner, limited to
its scopes; the endpoint authorizer (server.auth) applies the scopes, this module turns a key
into that Identity.

Key state is read through the shared cache (≤ 60 s) and written through on every change
before the request returns, so a revocation (K6), a rotation (K5) or new scopes (K4) apply on
the next request on every worker (R25). Readers fill the cache with set-if-absent and writers
overwrite it, so a reader that loaded the row just before a change cannot put it back.

Two invariants are kept by partial unique indexes over the non-revoked keys, not by reads:
names are unique per user (case-insensitively), and each key holds one of the user's ten
`slot`s, which is how two concurrent creations at the limit end with exactly one winner.
"""

from models.api_keys.manage import (
    access_key,
    check_key_name,
    check_scopes,
    delete_user_keys,
    do_create_key,
    do_revoke_key,
    do_revoke_user_keys,
    do_rotate_key,
    do_update_key,
    end_rotation_graces,
    expire_due_keys,
    export_api_keys,
    is_unique_violation,
    list_keys,
    sweep_api_keys,
)
from models.api_keys.shapes import (
    API_KEY_REVOKED,
    API_KEY_UPDATE,
    ApiKey,
    ApiKeyRevoked,
    ApiKeyUpdate,
    ApiKeyWithSecret,
    key_view,
)
from models.api_keys.state import describe_key, identify_bot, parse_key, state_cache_key
from models.api_keys.tables import (
    CREATE_RATE,
    KEY_LIMIT,
    MAX_GRACE_S,
    MAX_SCOPES,
    REQUEST_RATE,
    ROTATE_RATE,
    SCOPES,
    SWEEP_EVERY_S,
    api_keys,
)

__all__ = [
    "API_KEY_REVOKED",
    "API_KEY_UPDATE",
    "CREATE_RATE",
    "KEY_LIMIT",
    "MAX_GRACE_S",
    "MAX_SCOPES",
    "REQUEST_RATE",
    "ROTATE_RATE",
    "SCOPES",
    "SWEEP_EVERY_S",
    "ApiKey",
    "ApiKeyRevoked",
    "ApiKeyUpdate",
    "ApiKeyWithSecret",
    "access_key",
    "api_keys",
    "check_key_name",
    "check_scopes",
    "delete_user_keys",
    "describe_key",
    "do_create_key",
    "do_revoke_key",
    "do_revoke_user_keys",
    "do_rotate_key",
    "do_update_key",
    "end_rotation_graces",
    "expire_due_keys",
    "export_api_keys",
    "identify_bot",
    "is_unique_violation",
    "key_view",
    "list_keys",
    "parse_key",
    "state_cache_key",
    "sweep_api_keys",
]
