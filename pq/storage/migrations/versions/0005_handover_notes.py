"""handover_notes: what an operator writes for the next shift, per line and shift.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import pq.storage.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('handover_notes',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('shift', sa.String(length=16), nullable=False, comment='shift name, e.g. A'),
    sa.Column('shift_start', pq.storage.types.UtcDateTime(timezone=True), nullable=False,
              comment='start of the shift the note hands over'),
    sa.Column('author', sa.String(length=100), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handover_notes'))
    )
    op.create_index(op.f('ix_handover_notes_line_id_shift_start'), 'handover_notes', ['line_id', 'shift_start'])


def downgrade() -> None:
    op.drop_index(op.f('ix_handover_notes_line_id_shift_start'), table_name='handover_notes')
    op.drop_table('handover_notes')
