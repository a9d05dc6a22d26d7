"""The whole schema: every table pq stores (see pq/storage/schema.py).

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 00:20:26.809901
"""
from alembic import op
import sqlalchemy as sa
import pq.storage.types
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('alert_id', sa.String(length=36), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False, comment='raised | updated | acknowledged | shelved | unshelved | cleared | suppressed | feedback'),
    sa.Column('at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=True, comment="who; 'edge' for the runtime"),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_events'))
    )
    with op.batch_alter_table('alert_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_events_alert_id_at'), ['alert_id', 'at'], unique=False)

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
    op.create_table('alerts',
    sa.Column('id', sa.String(length=36), nullable=False, comment='UUID minted at the edge'),
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False, comment='part | flood | system'),
    sa.Column('cause', sa.String(length=200), nullable=False, comment='signal or mechanism key; one active alert per line+cause'),
    sa.Column('state', sa.String(length=16), nullable=False, comment='active | acknowledged | cleared | shelved | suppressed'),
    sa.Column('severity', sa.String(length=16), nullable=False, comment='low | medium | high'),
    sa.Column('serial', sa.String(length=100), nullable=True, comment='latest part that raised or updated it'),
    sa.Column('station', sa.String(length=200), nullable=True),
    sa.Column('product', sa.String(length=100), nullable=True),
    sa.Column('material_lot', sa.String(length=100), nullable=True),
    sa.Column('shift', sa.String(length=16), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('title', sa.Text(), nullable=False, comment='what is wrong, in one operator sentence'),
    sa.Column('action', sa.Text(), nullable=True, comment='recommended action from the playbook'),
    sa.Column('explanation', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment="top signals: value, normal range for today's conditions, direction"),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('repeat_count', sa.Integer(), nullable=False),
    sa.Column('raised_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('acked_at', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('acked_by', sa.String(length=100), nullable=True),
    sa.Column('cleared_at', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('shelved_until', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('shelve_reason', sa.Text(), nullable=True),
    sa.Column('feedback', sa.String(length=16), nullable=True, comment='confirmed | false_alarm | not_checked'),
    sa.Column('feedback_comment', sa.Text(), nullable=True),
    sa.Column('feedback_by', sa.String(length=100), nullable=True),
    sa.Column('feedback_at', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alerts_line_id_state_raised_at'), ['line_id', 'state', 'raised_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_state_raised_at'), ['state', 'raised_at'], unique=False)

    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('client', sa.String(length=100), nullable=True, comment="remote address or 'cli'"),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_action_at'), ['action', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('component_health',
    sa.Column('component', sa.String(length=200), nullable=False, comment='connector:NAME | edge:LINE'),
    sa.Column('line_id', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=32), nullable=False, comment='e.g. connected | lost | scoring | degraded'),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='samples/s, spool depth and age, drops, reconnects, freshness ...'),
    sa.Column('updated_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('component', name=op.f('pk_component_health'))
    )
    op.create_table('inspections',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('serial', sa.String(length=100), nullable=False),
    sa.Column('defect', sa.Boolean(), nullable=False),
    sa.Column('defect_code', sa.String(length=64), nullable=True),
    sa.Column('inspected_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False, comment='inspection | import'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inspections')),
    sa.UniqueConstraint('line_id', 'serial', name=op.f('uq_inspections_line_id_serial'))
    )
    op.create_table('line_events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False, comment='connection_lost | connection_recovered | gap | degraded | ...'),
    sa.Column('started_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('detail', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_line_events'))
    )
    with op.batch_alter_table('line_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_line_events_line_id_started_at'), ['line_id', 'started_at'], unique=False)

    op.create_table('lines',
    sa.Column('id', sa.String(length=64), nullable=False, comment='e.g. line-1'),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('station', sa.String(length=200), nullable=True, comment='machine/station name shown to operators'),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lines'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False, comment='e.g. defect'),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=True, comment='NULL = all lines'),
    sa.Column('product', sa.String(length=100), nullable=True, comment='NULL = all products'),
    sa.Column('kind', sa.String(length=32), nullable=False, comment='environment-aware | naive'),
    sa.Column('feature_set_version', sa.String(length=64), nullable=False),
    sa.Column('feature_names', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('train_start', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('train_end', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='overall validation metrics'),
    sa.Column('regime_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='per environmental regime'),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('card', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='model card: data, threshold rule, limits'),
    sa.Column('artifact', sa.LargeBinary(), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('trained_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_model_versions_name_version'))
    )
    op.create_table('playbook_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('content', sa.Text(), nullable=False, comment='TOML, validated before it is stored'),
    sa.Column('author', sa.String(length=100), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_playbook_versions'))
    )
    op.create_table('predictions',
    sa.Column('id', sa.String(length=36), nullable=False, comment='UUID minted at the edge'),
    sa.Column('decided_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('serial', sa.String(length=100), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('feature_set_version', sa.String(length=64), nullable=True),
    sa.Column('score', sa.Float(), nullable=True, comment='calibrated defect probability; NULL when not scored'),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('decision', sa.String(length=16), nullable=False, comment='ok | at_risk | not_scored'),
    sa.Column('reason', sa.Text(), nullable=True, comment='why not scored, in plain words'),
    sa.Column('contributions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='per-signal TreeSHAP contributions, top first'),
    sa.Column('latency_ms', sa.Float(), nullable=True, comment='cycle-complete notification to decision'),
    sa.PrimaryKeyConstraint('id', 'decided_at', name=op.f('pk_predictions'))
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_predictions_line_id_decided_at'), ['line_id', 'decided_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_predictions_line_id_serial'), ['line_id', 'serial'], unique=False)

    op.create_table('samples',
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('ts', pq.storage.types.UtcDateTime(timezone=True), nullable=False, comment='OPC UA source timestamp'),
    sa.Column('value', sa.Float(), nullable=True, comment='NULL when not numeric or not finite; see status'),
    sa.Column('status', sa.BigInteger(), nullable=False, comment='OPC UA status code; 0 = Good'),
    sa.Column('server_ts', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('value_text', sa.Text(), nullable=True, comment='non-numeric values (lot ids, product codes)'),
    sa.PrimaryKeyConstraint('tag_id', 'ts', name=op.f('pk_samples'))
    )
    op.create_table('training_jobs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False, comment='queued | running | done | failed'),
    sa.Column('progress', sa.Float(), nullable=False, comment='0..1'),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('requested_by', sa.String(length=100), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_jobs'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('username', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False, comment='operator | engineer | admin'),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('last_login_at', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('created_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('model_deployments',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=200), nullable=False, comment="line/product the version serves, '*' for all"),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False, comment='promote | rollback'),
    sa.Column('approved_by', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('override', sa.Boolean(), nullable=False),
    sa.Column('at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_model_deployments_model_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_deployments'))
    )
    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_deployments_scope_at'), ['scope', 'at'], unique=False)

    op.create_table('parts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('serial', sa.String(length=100), nullable=False),
    sa.Column('cycle_start', pq.storage.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('cycle_end', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('product', sa.String(length=100), nullable=True),
    sa.Column('material_lot', sa.String(length=100), nullable=True),
    sa.Column('shift', sa.String(length=16), nullable=True),
    sa.Column('context', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True, comment='context signal values at cycle start'),
    sa.Column('created_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['line_id'], ['lines.id'], name=op.f('fk_parts_line_id_lines')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_parts')),
    sa.UniqueConstraint('line_id', 'serial', name=op.f('uq_parts_line_id_serial'))
    )
    with op.batch_alter_table('parts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_parts_line_id_cycle_end'), ['line_id', 'cycle_end'], unique=False)

    op.create_table('tags',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('line_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False, comment='snake_case ending in its unit: melt_temp_c'),
    sa.Column('unit', sa.String(length=32), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False, comment='process | context | part_event | label'),
    sa.Column('low_limit', sa.Float(), nullable=True, comment='normal range, lower'),
    sa.Column('high_limit', sa.Float(), nullable=True, comment='normal range, upper'),
    sa.Column('node_id', sa.String(length=400), nullable=True, comment='OPC UA node id it was read from'),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['line_id'], ['lines.id'], name=op.f('fk_tags_line_id_lines')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tags')),
    sa.UniqueConstraint('line_id', 'name', name=op.f('uq_tags_line_id_name'))
    )
    op.create_table('part_features',
    sa.Column('part_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('feature_set_version', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False, comment='edge (served) | backfill'),
    sa.Column('features', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False, comment='{feature name: value}; NaN as null'),
    sa.Column('reason', sa.Text(), nullable=True, comment='why some features are NaN; empty when complete'),
    sa.Column('computed_at', pq.storage.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['part_id'], ['parts.id'], name=op.f('fk_part_features_part_id_parts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('part_id', 'feature_set_version', name=op.f('pk_part_features'))
    )


def downgrade() -> None:
    op.drop_table('part_features')
    op.drop_table('tags')
    with op.batch_alter_table('parts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_parts_line_id_cycle_end'))

    op.drop_table('parts')
    with op.batch_alter_table('model_deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_deployments_scope_at'))

    op.drop_table('model_deployments')
    op.drop_table('users')
    op.drop_table('training_jobs')
    op.drop_table('samples')
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_predictions_line_id_serial'))
        batch_op.drop_index(batch_op.f('ix_predictions_line_id_decided_at'))

    op.drop_table('predictions')
    op.drop_table('playbook_versions')
    op.drop_table('model_versions')
    op.drop_table('lines')
    with op.batch_alter_table('line_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_line_events_line_id_started_at'))

    op.drop_table('line_events')
    op.drop_table('inspections')
    op.drop_table('component_health')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))
        batch_op.drop_index(batch_op.f('ix_audit_log_action_at'))

    op.drop_table('audit_log')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_state_raised_at'))
        batch_op.drop_index(batch_op.f('ix_alerts_line_id_state_raised_at'))

    op.drop_table('alerts')
    op.drop_table('alert_kpis')
    with op.batch_alter_table('alert_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_events_alert_id_at'))

    op.drop_table('alert_events')
