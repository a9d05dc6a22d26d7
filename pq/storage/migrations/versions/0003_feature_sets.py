"""feature_sets: derived-feature expressions, context roles and training hints per feature-set version.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa
import pq.storage.types
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feature_sets',
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False, comment='import'),
    sa.Column('definition', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False,
              comment='{derived: [{name, expr}], context_roles: {name: risk|baseline}, training: {max_bin, ...}}'),
    sa.Column('updated_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_feature_sets'))
    )


def downgrade() -> None:
    op.drop_table('feature_sets')
