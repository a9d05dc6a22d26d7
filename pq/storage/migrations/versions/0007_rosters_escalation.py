"""Rosters (who is on duty per line and shift) and the alerts' owner and escalation columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 17:00:00
"""
from alembic import op
import sqlalchemy as sa
import pq.storage.types

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_ALERT_COLUMNS = (
    ('assigned_to', sa.String(length=100), 'user the edge assigned it to when raised (on-duty operator)'),
    ('escalation_level', sa.Integer(), 'escalation steps taken while unacknowledged; NULL or 0 = none'),
    ('escalated_to', sa.String(length=100), 'user of the latest escalation step'),
    ('escalated_role', sa.String(length=32), 'duty role of the latest step: shift_lead | quality_engineer ...'),
    ('escalated_at', pq.storage.types.UtcDateTime(timezone=True), None),
)
_EVENTS_OLD = 'raised | updated | acknowledged | shelved | unshelved | cleared | suppressed | feedback'
_EVENTS_NEW = _EVENTS_OLD + ' | assigned | escalated'


def _event_comment(new: str, old: str) -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite stores no column comments
        op.alter_column('alert_events', 'event', existing_type=sa.String(length=16), existing_nullable=False,
                        comment=new, existing_comment=old)


def upgrade() -> None:
    op.create_table('rosters',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=False, comment='a line id, or * for every line'),
    sa.Column('shift', sa.String(length=16), nullable=False,
              comment="the parts' shift context value (A, B, C), or * for every shift"),
    sa.Column('duty_role', sa.String(length=32), nullable=False, comment='operator | shift_lead | quality_engineer'),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('contact', sa.String(length=200), nullable=True,
              comment='where a gateway reaches them: pager number, e-mail, Teams id'),
    sa.Column('updated_by', sa.String(length=100), nullable=False),
    sa.Column('updated_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['username'], ['users.username'], name=op.f('fk_rosters_username_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rosters')),
    sa.UniqueConstraint('line_id', 'shift', 'duty_role', name=op.f('uq_rosters_line_id_shift_duty_role'))
    )
    with op.batch_alter_table('alerts') as batch:
        for name, type_, comment in _ALERT_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True, comment=comment))
    _event_comment(_EVENTS_NEW, _EVENTS_OLD)


def downgrade() -> None:
    _event_comment(_EVENTS_OLD, _EVENTS_NEW)
    with op.batch_alter_table('alerts') as batch:
        for name, _type, _comment in reversed(_ALERT_COLUMNS):
            batch.drop_column(name)
    op.drop_table('rosters')
