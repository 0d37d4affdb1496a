"""OAuth sign-in, linking and re-authentication (auth.md E16-E21, R13-R17).

A flow carries two single-use secrets, both kept only as SHA-256:
- the `state` sent to the provider (32 random bytes, bound to one provider, 10 min): the
  callback claims it with a conditional update, so a replay finds it used (R14);
- the result code handed back to the client's redirect URI (32 random bytes, 60 s): the
  exchange spends it with a conditional update before anything else, and it only pays out
  to the holder of the PKCE verifier the client committed to at the start.
Link and re-authentication commit at the exchange, for the bearer user who started the
flow. Provider tokens never leave the callback (R16); accounts are never joined by email.
"""

from models.oauth.flows import (
    InvalidCallback,
    ProviderItem,
    StartedFlow,
    callback_url,
    check_redirect_uri,
    do_callback,
    do_exchange,
    do_start_flow,
    list_providers,
    purge_expired_flows,
    s256,
)
from models.oauth.identities import (
    IdentityItem,
    LinkedIdentity,
    LinkResult,
    do_unlink,
    identity_summaries,
    linked_providers,
    list_identities,
)
from models.oauth.tables import oauth_flows, oauth_identities

__all__ = [
    "IdentityItem",
    "InvalidCallback",
    "LinkResult",
    "LinkedIdentity",
    "ProviderItem",
    "StartedFlow",
    "callback_url",
    "check_redirect_uri",
    "do_callback",
    "do_exchange",
    "do_start_flow",
    "do_unlink",
    "identity_summaries",
    "linked_providers",
    "list_identities",
    "list_providers",
    "oauth_flows",
    "oauth_identities",
    "purge_expired_flows",
    "s256",
]
