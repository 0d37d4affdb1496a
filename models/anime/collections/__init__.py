"""Collections (anime.md §3): user-curated lists of anime, public, unlisted or private.

Modules: `tables` (data and limits), `shapes` (responses and events), `access` (R18 in one
place), `manage` (CL2, CL4, CL5, CL12), `items` (CL7-CL10), `reads` (CL1, CL3, CL6, CL11).
"""

from models.anime.collections.access import access_collection, access_owned
from models.anime.collections.items import (
    ITEM_ADDED_HOOKS,
    do_add_item,
    do_remove_item,
    do_reorder,
    do_update_item,
)
from models.anime.collections.manage import do_create, do_delete, do_rotate_slug, do_update
from models.anime.collections.reads import browse, get_collection, list_items, list_user_collections
from models.anime.collections.shapes import (
    COLLECTION_PUBLISH,
    COLLECTION_UPDATE,
    Collection,
    CollectionItem,
    CollectionPage,
    CollectionSummary,
    ItemPage,
    SlugRotated,
)
from models.anime.collections.tables import (
    collection,
    collection_item,
    collection_quota,
)

__all__ = [
    "COLLECTION_PUBLISH",
    "COLLECTION_UPDATE",
    "ITEM_ADDED_HOOKS",
    "Collection",
    "CollectionItem",
    "CollectionPage",
    "CollectionSummary",
    "ItemPage",
    "SlugRotated",
    "access_collection",
    "access_owned",
    "browse",
    "collection",
    "collection_item",
    "collection_quota",
    "do_add_item",
    "do_create",
    "do_delete",
    "do_remove_item",
    "do_reorder",
    "do_rotate_slug",
    "do_update",
    "do_update_item",
    "get_collection",
    "list_items",
    "list_user_collections",
]
