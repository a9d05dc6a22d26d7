"""Drop alert_kpis: alarm KPIs have one definition, computed from the alerts table where they are shown
(pq.monitoring.kpis); the hourly copy the edge wrote was read by nothing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 14:30:00
"""
from alembic import op
import sqlalchemy as sa
import pq.storage.types
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table('alert_kpis')


def downgrade() -> None:
    op.create_table('alert_kpis',
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('period_start', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('period_s', sa.Integer(), nullable=False),
    sa.Column('alerts', sa.Integer(), nullable=False),
    sa.Column('floods', sa.Integer(), nullable=False),
    sa.Column('alerts_per_10min_max', sa.Float(), nullable=True),
    sa.Column('mean_time_to_ack_s', sa.Float(), nullable=True),
    sa.Column('top_causes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('computed_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('line_id', 'period_start', 'period_s', name=op.f('pk_alert_kpis'))
    )
