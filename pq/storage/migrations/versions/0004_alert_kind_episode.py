"""alerts.kind may be "episode": an operator alarm for k of the last n parts at risk with one cause
(the two decisions: parts are diverted, operators are called for episodes). Only the column comment changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 18:45:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _has_comments() -> bool:
    return op.get_bind().dialect.name != "sqlite"  # SQLite stores no column comments


def upgrade() -> None:
    if not _has_comments():
        return
    op.alter_column('alerts', 'kind', existing_type=sa.String(length=16), existing_nullable=False,
                    comment='part | episode | flood | system', existing_comment='part | flood | system')


def downgrade() -> None:
    if not _has_comments():
        return
    op.alter_column('alerts', 'kind', existing_type=sa.String(length=16), existing_nullable=False,
                    comment='part | flood | system', existing_comment='part | episode | flood | system')
