"""The whole product's schema, in SQLAlchemy Core.

Owned here: every table pq stores. Migrations (``pq/storage/migrations``) create and evolve it;
later work adds columns through a new migration rather than redesigning.

Keys that make replays safe:
- ``samples``: (tag_id, ts), the OPC UA source timestamp; a replay after an outage writes nothing twice.
- ``parts``, ``inspections``: (line_id, serial); an inspection may arrive before its part row.
- ``predictions``, ``alerts``, ``alert_events``: ids minted by the edge runtime (UUID text), so the
  decision exists in memory first and its later write through the spool is idempotent.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from pq.storage.types import Json, UtcDateTime

__all__ = ["metadata"] + [
    "lines", "tags", "samples", "parts", "part_features", "feature_sets", "inspections", "predictions",
    "alerts", "alert_events", "model_versions", "model_deployments", "model_shadows", "shadow_scores",
    "training_jobs", "training_schedules", "training_proposals", "users", "audit_log", "playbook_versions",
    "component_health", "line_events", "handover_notes", "rosters",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# BIGINT autoincrement on PostgreSQL, INTEGER (rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

TAG_ROLES = ("process", "context", "part_event", "label")

lines = Table(
    "lines", metadata,
    Column("id", String(64), primary_key=True, comment="e.g. line-1"),
    Column("name", String(200), nullable=False),
    Column("station", String(200), comment="machine/station name shown to operators"),
    Column("description", Text),
    Column("created_at", UtcDateTime, nullable=False),
)

tags = Table(
    "tags", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("line_id", String(64), ForeignKey("lines.id"), nullable=False),
    Column("name", String(200), nullable=False, comment="snake_case ending in its unit: melt_temp_c"),
    Column("unit", String(32)),
    Column("role", String(16), nullable=False, comment="process | context | part_event | label"),
    Column("low_limit", Float, comment="normal range, lower"),
    Column("high_limit", Float, comment="normal range, upper"),
    Column("node_id", String(400), comment="OPC UA node id it was read from"),
    Column("description", Text),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("line_id", "name"),
)

samples = Table(
    "samples", metadata,
    Column("tag_id", Integer, primary_key=True),
    Column("ts", UtcDateTime, primary_key=True, comment="OPC UA source timestamp"),
    Column("value", Float, comment="NULL when not numeric or not finite; see status"),
    Column("status", BigInteger, nullable=False, default=0, comment="OPC UA status code; 0 = Good"),
    Column("server_ts", UtcDateTime),
    Column("value_text", Text, comment="non-numeric values (lot ids, product codes)"),
)

parts = Table(
    "parts", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("line_id", String(64), ForeignKey("lines.id"), nullable=False),
    Column("serial", String(100), nullable=False),
    Column("cycle_start", UtcDateTime),
    Column("cycle_end", UtcDateTime, nullable=False),
    Column("product", String(100)),
    Column("material_lot", String(100)),
    Column("shift", String(16)),
    Column("context", Json, comment="context signal values at cycle start"),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("line_id", "serial"),
    Index(None, "line_id", "cycle_end"),
)

part_features = Table(
    "part_features", metadata,
    Column("part_id", BigId, ForeignKey("parts.id", ondelete="CASCADE"), primary_key=True),
    Column("feature_set_version", String(64), primary_key=True),
    Column("source", String(16), nullable=False, comment="edge (served) | backfill"),
    Column("features", Json, nullable=False, comment="{feature name: value}; NaN as null"),
    Column("reason", Text, comment="why some features are NaN; empty when complete"),
    Column("computed_at", UtcDateTime, nullable=False),
)

# What the vectors of a feature-set version hold beyond their names: the derived features' expressions,
# each context feature's role (risk factor or baseline input) and training hints such as histogram bins.
# Written by `pq import` for `import-<name>`; training reads it so a feature set means the same to both.
feature_sets = Table(
    "feature_sets", metadata,
    Column("version", String(64), primary_key=True),
    Column("source", String(16), nullable=False, comment="import"),
    Column("definition", Json, nullable=False,
           comment="{derived: [{name, expr}], context_roles: {name: risk|baseline}, training: {max_bin, ...}}"),
    Column("updated_at", UtcDateTime, nullable=False),
)

inspections = Table(
    "inspections", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("line_id", String(64), nullable=False),
    Column("serial", String(100), nullable=False),
    Column("defect", Boolean, nullable=False),
    Column("defect_code", String(64)),
    Column("inspected_at", UtcDateTime, nullable=False),
    Column("source", String(32), nullable=False, default="inspection", comment="inspection | import"),
    UniqueConstraint("line_id", "serial"),
)

predictions = Table(
    "predictions", metadata,
    Column("id", String(36), primary_key=True, comment="UUID minted at the edge"),
    Column("decided_at", UtcDateTime, primary_key=True),
    Column("line_id", String(64), nullable=False),
    Column("serial", String(100), nullable=False),
    Column("model_version_id", Integer),
    Column("feature_set_version", String(64)),
    Column("score", Float, comment="calibrated defect probability; NULL when not scored"),
    Column("threshold", Float),
    Column("decision", String(16), nullable=False, comment="ok | at_risk | not_scored"),
    Column("reason", Text, comment="why not scored, in plain words"),
    Column("contributions", Json, comment="per-signal TreeSHAP contributions, top first"),
    Column("latency_ms", Float, comment="cycle-complete notification to decision"),
    Index(None, "line_id", "decided_at"),
    Index(None, "line_id", "serial"),
)

ALERT_STATES = ("active", "acknowledged", "cleared", "shelved", "suppressed")

alerts = Table(
    "alerts", metadata,
    Column("id", String(36), primary_key=True, comment="UUID minted at the edge"),
    Column("line_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False, default="part", comment="part | episode | flood | system"),
    Column("cause", String(200), nullable=False, comment="signal or mechanism key; one active alert per line+cause"),
    Column("state", String(16), nullable=False, comment="active | acknowledged | cleared | shelved | suppressed"),
    Column("severity", String(16), nullable=False, comment="low | medium | high"),
    Column("serial", String(100), comment="latest part that raised or updated it"),
    Column("station", String(200)),
    Column("product", String(100)),
    Column("material_lot", String(100)),
    Column("shift", String(16)),
    Column("score", Float),
    Column("title", Text, nullable=False, comment="what is wrong, in one operator sentence"),
    Column("action", Text, comment="recommended action from the playbook"),
    Column("explanation", Json, comment="top signals: value, normal range for today's conditions, direction"),
    Column("model_version_id", Integer),
    Column("repeat_count", Integer, nullable=False, default=1),
    Column("raised_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("acked_at", UtcDateTime),
    Column("acked_by", String(100)),
    Column("cleared_at", UtcDateTime),
    Column("shelved_until", UtcDateTime),
    Column("shelve_reason", Text),
    Column("feedback", String(16), comment="confirmed | false_alarm | not_checked"),
    Column("feedback_comment", Text),
    Column("feedback_by", String(100)),
    Column("feedback_at", UtcDateTime),
    Column("assigned_to", String(100), comment="user the edge assigned it to when raised (on-duty operator)"),
    Column("escalation_level", Integer, comment="escalation steps taken while unacknowledged; NULL or 0 = none"),
    Column("escalated_to", String(100), comment="user of the latest escalation step"),
    Column("escalated_role", String(32), comment="duty role of the latest step: shift_lead | quality_engineer ..."),
    Column("escalated_at", UtcDateTime),
    Index(None, "line_id", "state", "raised_at"),
    Index(None, "state", "raised_at"),
)

alert_events = Table(
    "alert_events", metadata,
    Column("id", String(36), primary_key=True),
    Column("alert_id", String(36), nullable=False),
    Column("event", String(16), nullable=False,
           comment="raised | updated | acknowledged | shelved | unshelved | cleared | suppressed | feedback | "
                   "assigned | escalated"),
    Column("at", UtcDateTime, nullable=False),
    Column("username", String(100), comment="who; 'edge' for the runtime"),
    Column("detail", Json),
    Index(None, "alert_id", "at"),
)

model_versions = Table(
    "model_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, comment="e.g. defect"),
    Column("version", Integer, nullable=False),
    Column("line_id", String(64), comment="NULL = all lines"),
    Column("product", String(100), comment="NULL = all products"),
    Column("kind", String(32), nullable=False, default="environment-aware", comment="environment-aware | naive"),
    Column("feature_set_version", String(64), nullable=False),
    Column("feature_names", Json, nullable=False),
    Column("train_start", UtcDateTime),
    Column("train_end", UtcDateTime),
    Column("params", Json),
    Column("metrics", Json, comment="overall validation metrics"),
    Column("regime_metrics", Json, comment="per environmental regime"),
    Column("threshold", Float, nullable=False),
    Column("card", Json, comment="model card: data, threshold rule, limits"),
    Column("artifact", LargeBinary, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("trained_by", String(100)),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("name", "version"),
)

model_deployments = Table(
    "model_deployments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scope", String(200), nullable=False, comment="line/product the version serves, '*' for all"),
    Column("model_version_id", Integer, ForeignKey("model_versions.id"), nullable=False),
    Column("action", String(16), nullable=False, comment="promote | rollback"),
    Column("approved_by", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("override", Boolean, nullable=False, default=False),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "scope", "at"),
)

# Champion / challenger: the latest row of a scope says which version runs in shadow there (action
# "start") or that none does ("stop"). Separate from model_deployments, whose latest row is production.
model_shadows = Table(
    "model_shadows", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scope", String(200), nullable=False, comment="line/product the challenger shadows, '*' for all products"),
    Column("model_version_id", Integer, ForeignKey("model_versions.id"), comment="NULL on a stop row"),
    Column("action", String(16), nullable=False, comment="start | stop"),
    Column("by", String(100), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index(None, "scope", "at"),
)

# One row per part scored by production while a challenger ran in shadow: both models on the same
# served vector, each with its own two decisions (diverted? would an operator alarm have opened?).
shadow_scores = Table(
    "shadow_scores", metadata,
    Column("id", String(36), primary_key=True, comment="the production prediction's id"),
    Column("decided_at", UtcDateTime, primary_key=True),
    Column("line_id", String(64), nullable=False),
    Column("serial", String(100), nullable=False),
    Column("cycle_end", UtcDateTime, nullable=False),
    Column("product", String(100)),
    Column("context", Json, comment="regime context of the part (ambient, humidity, lot, shift ...)"),
    Column("production_version_id", Integer, nullable=False),
    Column("production_probability", Float, nullable=False),
    Column("production_threshold", Float, nullable=False),
    Column("production_decision", String(16), nullable=False, comment="ok | at_risk (diverted)"),
    Column("production_alarm", Boolean, nullable=False, comment="this part opened an operator alarm episode"),
    Column("challenger_version_id", Integer, nullable=False),
    Column("challenger_probability", Float, nullable=False),
    Column("challenger_threshold", Float, nullable=False),
    Column("challenger_decision", String(16), nullable=False, comment="ok | at_risk (would have diverted)"),
    Column("challenger_alarm", Boolean, nullable=False, comment="would have opened an operator alarm episode"),
    Column("challenger_ms", Float, comment="time to score the challenger, after production's decision"),
    Index(None, "challenger_version_id", "decided_at"),
    Index(None, "line_id", "decided_at"),
)

training_jobs = Table(
    "training_jobs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("status", String(16), nullable=False, comment="queued | running | done | failed"),
    Column("progress", Float, nullable=False, default=0.0, comment="0..1"),
    Column("message", Text),
    Column("params", Json),
    Column("requested_by", String(100)),
    Column("model_version_id", Integer),
    Column("error", Text),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
)

# Scheduled retraining (models.scheduler): a schedule trains a candidate on its latest window and
# records a proposal; promotion stays an engineer's decision through the registry's gate.
training_schedules = Table(
    "training_schedules", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("scope", String(200), nullable=False, comment="LINE/PRODUCT, '*' for all"),
    Column("every_days", Float, comment="time trigger; NULL = none"),
    Column("min_new_labels", Integer,
           comment="label trigger: inspections + operator feedback since the last run; NULL = none"),
    Column("on_drift", Boolean, nullable=False, default=False,
           comment="drift trigger: a drift line event since the last run"),
    Column("window_days", Float, nullable=False, comment="train on the last N days"),
    Column("config", Json, nullable=False, comment="TrainConfig fields: feature_set_version, kind, budgets ..."),
    Column("approver", String(100), nullable=False, comment="engineer or admin notified of a proposal"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_by", String(100), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_run_at", UtcDateTime),
    Column("next_due_at", UtcDateTime),
    Column("last_result", Text),
)

PROPOSAL_STATUSES = ("proposed", "failed", "approved", "rejected")

training_proposals = Table(
    "training_proposals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("schedule_id", Integer),
    Column("scope", String(200), nullable=False),
    Column("trigger", Text, nullable=False, comment="why the run happened: due, labels, drift, run-now"),
    Column("candidate_version_id", Integer, comment="NULL when training itself failed"),
    Column("production_version_id", Integer),
    Column("report", Json, nullable=False, comment="the registry's gate and both models on the same window"),
    Column("verdict", String(16), nullable=False, comment="passed | failed"),
    Column("status", String(16), nullable=False, comment="proposed | failed | approved | rejected"),
    Column("shadow", Text, comment="what putting the candidate in shadow did"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("decided_by", String(100)),
    Column("decided_at", UtcDateTime),
    Column("reason", Text),
    Index(None, "status", "created_at"),
)

USER_ROLES = ("operator", "engineer", "admin")
DUTY_ROLES = ("operator", "shift_lead", "quality_engineer")  # who answers for an alarm; not UI permissions

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("password_hash", String(300), nullable=False),
    Column("role", String(16), nullable=False, comment="operator | engineer | admin"),
    Column("active", Boolean, nullable=False, default=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", UtcDateTime),
    Column("last_login_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("username", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200)),
    Column("detail", Json),
    Column("client", String(100), comment="remote address or 'cli'"),
    Index(None, "at"),
    Index(None, "action", "at"),
)

playbook_versions = Table(
    "playbook_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("content", Text, nullable=False, comment="TOML, validated before it is stored"),
    Column("author", String(100), nullable=False),
    Column("comment", Text),
    Column("created_at", UtcDateTime, nullable=False),
)

component_health = Table(
    "component_health", metadata,
    Column("component", String(200), primary_key=True, comment="connector:NAME | edge:LINE"),
    Column("line_id", String(64)),
    Column("state", String(32), nullable=False, comment="e.g. connected | lost | scoring | degraded"),
    Column("detail", Json, comment="samples/s, spool depth and age, drops, reconnects, freshness ..."),
    Column("updated_at", UtcDateTime, nullable=False),
)

line_events = Table(
    "line_events", metadata,
    Column("id", String(36), primary_key=True),
    Column("line_id", String(64)),
    Column("source", String(200), nullable=False),
    Column("kind", String(32), nullable=False, comment="connection_lost | connection_recovered | gap | degraded | ..."),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("detail", Json),
    Index(None, "line_id", "started_at"),
)

handover_notes = Table(
    "handover_notes", metadata,
    Column("id", String(36), primary_key=True),
    Column("line_id", String(64), nullable=False),
    Column("shift", String(16), nullable=False, comment="shift name, e.g. A"),
    Column("shift_start", UtcDateTime, nullable=False, comment="start of the shift the note hands over"),
    Column("author", String(100), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "line_id", "shift_start"),
)

# Who is on duty per line and shift (``*`` = every line / every shift), edited by admins (pq/alerts/roster.py).
rosters = Table(
    "rosters", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("line_id", String(64), nullable=False, comment="a line id, or * for every line"),
    Column("shift", String(16), nullable=False, comment="the parts' shift context value (A, B, C), or * for every shift"),
    Column("duty_role", String(32), nullable=False, comment="operator | shift_lead | quality_engineer"),
    Column("username", String(100), ForeignKey("users.username"), nullable=False),
    Column("contact", String(200), comment="where a gateway reaches them: pager number, e-mail, Teams id"),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("line_id", "shift", "duty_role"),
)
