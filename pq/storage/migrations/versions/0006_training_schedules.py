"""training_schedules and training_proposals: scheduled retraining that proposes a candidate and never
promotes it (models.scheduler); promotion stays an engineer's decision through the registry's gate.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
import pq.storage.types
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
_TS = pq.storage.types.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('training_schedules',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False, comment="LINE/PRODUCT, '*' for all"),
    sa.Column('every_days', sa.Float(), nullable=True, comment='time trigger; NULL = none'),
    sa.Column('min_new_labels', sa.Integer(), nullable=True,
              comment='label trigger: inspections + operator feedback since the last run; NULL = none'),
    sa.Column('on_drift', sa.Boolean(), nullable=False, comment='drift trigger: a drift line event since the last run'),
    sa.Column('window_days', sa.Float(), nullable=False, comment='train on the last N days'),
    sa.Column('config', _JSON, nullable=False, comment='TrainConfig fields: feature_set_version, kind, budgets ...'),
    sa.Column('approver', sa.String(length=100), nullable=False, comment='engineer or admin notified of a proposal'),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('last_run_at', _TS, nullable=True),
    sa.Column('next_due_at', _TS, nullable=True),
    sa.Column('last_result', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_schedules'))
    )
    op.create_table('training_proposals',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=True),
    sa.Column('scope', sa.String(length=200), nullable=False),
    sa.Column('trigger', sa.Text(), nullable=False, comment='why the run happened: due, labels, drift, run-now'),
    sa.Column('candidate_version_id', sa.Integer(), nullable=True, comment='NULL when training itself failed'),
    sa.Column('production_version_id', sa.Integer(), nullable=True),
    sa.Column('report', _JSON, nullable=False, comment="the registry's gate and both models on the same window"),
    sa.Column('verdict', sa.String(length=16), nullable=False, comment='passed | failed'),
    sa.Column('status', sa.String(length=16), nullable=False, comment='proposed | failed | approved | rejected'),
    sa.Column('shadow', sa.Text(), nullable=True, comment='what putting the candidate in shadow did'),
    sa.Column('created_at', _TS, nullable=False),
    sa.Column('decided_by', sa.String(length=100), nullable=True),
    sa.Column('decided_at', _TS, nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_proposals'))
    )
    op.create_index(op.f('ix_training_proposals_status_created_at'), 'training_proposals', ['status', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_training_proposals_status_created_at'), table_name='training_proposals')
    op.drop_table('training_proposals')
    op.drop_table('training_schedules')
