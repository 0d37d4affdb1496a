"""merge the identity and anime branches

Revision ID: 0006_merge
Revises: 0003_keys_push, 0003_oauth, 0003_users, 0005_anime_list, 0005_catalog_more, 0005_collections_comments
Create Date: 2026-11-28 19:16:14.163102
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db


revision: str = '0006_merge'
down_revision: str | None = ('0003_keys_push', '0003_oauth', '0003_users', '0005_anime_list', '0005_catalog_more', '0005_collections_comments')
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
