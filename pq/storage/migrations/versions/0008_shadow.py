"""Champion / challenger in shadow: model_shadows (which version shadows which scope) and shadow_scores
(both models' decisions on the same served vector, one row per part; a hypertable on TimescaleDB).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 17:10:00
"""
from alembic import op
import sqlalchemy as sa
import pq.storage.types
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_DT = pq.storage.types.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('model_shadows',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False,
              comment="line/product the challenger shadows, '*' for all products"),
    sa.Column('model_version_id', sa.Integer(), nullable=True, comment='NULL on a stop row'),
    sa.Column('action', sa.String(length=16), nullable=False, comment='start | stop'),
    sa.Column('by', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', _DT, nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'],
                            name=op.f('fk_model_shadows_model_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_shadows'))
    )
    op.create_index(op.f('ix_model_shadows_scope_at'), 'model_shadows', ['scope', 'at'], unique=False)
    op.create_table('shadow_scores',
    sa.Column('id', sa.String(length=36), nullable=False, comment="the production prediction's id"),
    sa.Column('decided_at', _DT, nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('serial', sa.String(length=100), nullable=False),
    sa.Column('cycle_end', _DT, nullable=False),
    sa.Column('product', sa.String(length=100), nullable=True),
    sa.Column('context', _JSON, nullable=True, comment='regime context of the part (ambient, humidity, lot, shift ...)'),
    sa.Column('production_version_id', sa.Integer(), nullable=False),
    sa.Column('production_probability', sa.Float(), nullable=False),
    sa.Column('production_threshold', sa.Float(), nullable=False),
    sa.Column('production_decision', sa.String(length=16), nullable=False, comment='ok | at_risk (diverted)'),
    sa.Column('production_alarm', sa.Boolean(), nullable=False, comment='this part opened an operator alarm episode'),
    sa.Column('challenger_version_id', sa.Integer(), nullable=False),
    sa.Column('challenger_probability', sa.Float(), nullable=False),
    sa.Column('challenger_threshold', sa.Float(), nullable=False),
    sa.Column('challenger_decision', sa.String(length=16), nullable=False, comment='ok | at_risk (would have diverted)'),
    sa.Column('challenger_alarm', sa.Boolean(), nullable=False, comment='would have opened an operator alarm episode'),
    sa.Column('challenger_ms', sa.Float(), nullable=True,
              comment="time to score the challenger, after production's decision"),
    sa.PrimaryKeyConstraint('id', 'decided_at', name=op.f('pk_shadow_scores'))
    )
    op.create_index(op.f('ix_shadow_scores_challenger_version_id_decided_at'), 'shadow_scores',
                    ['challenger_version_id', 'decided_at'], unique=False)
    op.create_index(op.f('ix_shadow_scores_line_id_decided_at'), 'shadow_scores', ['line_id', 'decided_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_shadow_scores_line_id_decided_at'), table_name='shadow_scores')
    op.drop_index(op.f('ix_shadow_scores_challenger_version_id_decided_at'), table_name='shadow_scores')
    op.drop_table('shadow_scores')
    op.drop_index(op.f('ix_model_shadows_scope_at'), table_name='model_shadows')
    op.drop_table('model_shadows')
