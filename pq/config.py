"""Settings: the only place pq reads its configuration.

Sources, highest priority first: keyword arguments, ``PQ_*`` environment variables, a TOML file
(``PQ_CONFIG_FILE``, default ``pq.toml`` in the working directory, optional), then the defaults
below. Entry points call :func:`load_settings` once and pass the object down; nothing reads
``os.environ`` or builds settings at import time.

Example::

    settings = load_settings(database_url="sqlite:///tmp/pq.db")
    settings.database_url
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pq.errors import ConfigError

__all__ = ["Settings", "load_settings", "settings_table"]

ENV_PREFIX = "PQ_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    # --- store --------------------------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///var/pq.db",
        description="Store URL: sqlite:///path (embedded default) or postgresql+psycopg://user@host/db",
    )
    db_connect_timeout_s: float = Field(
        30.0, ge=0, description="How long to retry an unreachable database (with backoff) before giving up"
    )
    db_pool_size: int = Field(5, gt=0, description="PostgreSQL connections kept open per process")
    retention_days: int = Field(
        90, gt=0, description="Raw samples older than this are dropped (TimescaleDB chunks or DELETE)"
    )
    ingest_max_future_s: float = Field(
        300.0, ge=0, description="Samples stamped further than this in the future are rejected and counted"
    )
    # --- files ----------------------------------------------------------------------------------
    data_dir: Path = Field(
        Path("var"), description="Local state: spools, certificates, reports, logs, the demo database"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of pq's own loggers"
    )

    # --- UI / auth (owned by ui/ and pq/auth/) ---------------------------------------------------
    ui_host: str = Field("127.0.0.1", description="Address `pq ui` listens on (0.0.0.0 to serve the shop-floor LAN)")
    ui_port: int = Field(8050, gt=0, lt=65536, description="Port `pq ui` listens on")
    ui_debug: bool = Field(False, description="Dash debug mode (tracebacks in the browser): never on a plant network")
    ui_secret_key: SecretStr | None = Field(
        None,
        description="Key that signs session cookies; when unset one is generated once and kept in "
        "DATA_DIR/ui_secret_key (mode 600). Never logged",
    )
    ui_session_hours: float = Field(12.0, gt=0, description="A login lasts this long (one shift plus margin)")
    ui_cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only (set behind a TLS proxy)")
    ui_refresh_s: float = Field(2.0, gt=0, le=2.0, description="Live pages poll the store this often")
    ui_login_max_failures: int = Field(
        5, gt=0, description="Failed logins per user name + address within UI_LOGIN_WINDOW_S before refusing"
    )
    ui_login_window_s: float = Field(300.0, gt=0, description="Window of the login rate limit")
    ui_lockout_failures: int = Field(
        10, gt=0, description="Consecutive failed logins that lock an account for UI_LOCKOUT_S"
    )
    ui_lockout_s: float = Field(900.0, gt=0, description="How long a locked account stays locked")
    ui_password_min_length: int = Field(10, ge=8, description="Minimum password length for UI users")
    ui_shelve_max_h: float = Field(12.0, gt=0, description="Longest an operator may shelve an alert")
    ui_queue_window_h: float = Field(
        24.0, gt=0, description="Acknowledged alerts still waiting for feedback stay in the queue this long"
    )
    ui_threads: int = Field(8, gt=0, description="Worker threads of the UI web server")

    # --- Connector / spool (connectors/, pq/spool/, pq/health.py) -------------------------
    spool_dir: Path | None = Field(
        None, description="Directory of the durable spools (one SQLite file per connector); default PQ_DATA_DIR/spool"
    )
    spool_max_mb: float = Field(
        512.0, gt=0, description="Size bound of one spool (payload MB); what happens when full is PQ_SPOOL_FULL_POLICY"
    )
    spool_full_policy: Literal["block", "drop_oldest"] = Field(
        "block",
        description="Spool full: block = keep data upstream and wait for the store (back-pressure, counted); "
        "drop_oldest = delete the oldest records (counted, logged)",
    )
    spool_block_timeout_s: float = Field(
        5.0, ge=0, description="How long one spool append waits for room under the block policy before it is retried"
    )
    spool_fsync: Literal["full", "normal"] = Field(
        "full",
        description="full = every spool append is fsynced (survives power loss); normal = survives a killed "
        "process, not a power cut",
    )
    connector_flush_interval_ms: int = Field(
        100, gt=0, description="How often the connector moves received samples into the spool (one record per flush)"
    )
    connector_buffer_max_samples: int = Field(
        500_000, gt=0,
        description="Samples held in memory while the spool refuses appends; beyond this the newest are dropped and counted",
    )
    connector_reconnect_max_delay_s: float = Field(
        2.0, gt=0, description="Longest wait between OPC UA reconnect attempts (exponential backoff cap)"
    )
    connector_watchdog_s: float = Field(
        1.0, gt=0, description="OPC UA liveness probe interval; a server that does not answer within it is treated as hung"
    )
    connector_request_timeout_s: float = Field(
        4.0, gt=0, description="Timeout of one OPC UA request (browse, read, create subscription)"
    )
    connector_health_interval_s: float = Field(
        5.0, gt=0, description="How often a connector writes its component_health row"
    )
    pki_dir: Path | None = Field(
        None, description="Client certificate, key and trust list for OPC UA security; default PQ_DATA_DIR/pki"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus metrics on this port (unset = off)"
    )
    metrics_addr: str = Field(
        "127.0.0.1", description="Address the Prometheus metrics server binds to"
    )
    # --- end Connector / spool ------------------------------------------------------------------------

    # --- Edge / alerts (issue 7: pq/edge/, pq/alerts/, connectors/outputs/) --------------------------
    edge_stale_s: float = Field(
        30.0, gt=0, description="A key signal with no good sample for this long (source time) makes parts 'not scored'"
    )
    edge_drift_margin: float = Field(
        0.1, ge=0, description="A feature beyond the model's training min/max by more than this fraction of the "
        "range makes the part 'not scored' (drift)"
    )
    edge_ring_capacity: int = Field(
        8192, ge=16, description="Samples kept per tag in the edge's ring buffers (replayed when the feature set changes)"
    )
    edge_feature_capacity_s: float = Field(
        120.0, gt=0, description="Seconds of samples the streaming feature buffers hold (longer than the longest cycle)"
    )
    edge_max_rate_hz: float = Field(
        50.0, gt=0, description="Highest sample rate per tag the feature buffers are sized for"
    )
    edge_model_poll_s: float = Field(
        5.0, gt=0, le=30, description="How often the edge asks the registry which model is in production"
    )
    edge_alert_sync_s: float = Field(
        3.0, gt=0, description="How often the edge re-reads operator actions (acknowledge, shelve) from the store"
    )
    edge_health_interval_s: float = Field(
        5.0, gt=0, description="How often the edge writes its component_health row (and on every state change)"
    )
    edge_decisions: Literal["two", "single"] = Field(
        "two", description="two: parts above the model's diversion threshold are diverted for inspection and an "
        "operator alarm opens for an episode (k of the last n parts at risk with one cause); single: every part above "
        "the alert threshold is diverted and raises an alert (the behaviour before the two decisions)"
    )
    edge_flood_limit: int = Field(
        10, gt=0, description="More new alerts than this within PQ_EDGE_FLOOD_WINDOW_S on a line = flood: one flood alert"
    )
    edge_flood_window_s: float = Field(600.0, gt=0, description="Window of the flood rule")
    edge_clear_after_ok_parts: int = Field(
        5, gt=0, description="An alert clears after this many scored parts in a row without its cause"
    )
    edge_playbook_file: Path | None = Field(
        None, description="Playbook TOML used when the store has no playbook version; default the shipped one"
    )
    edge_playbook_poll_s: float = Field(
        10.0, gt=0, description="How often the edge checks for a new playbook version (store, then file)"
    )
    escalation_file: Path | None = Field(
        None, description="Escalation rules TOML (per severity: after how many minutes to which duty role); "
                          "default the shipped one"
    )
    edge_outputs_file: Path | None = Field(
        None, description="TOML file configuring alert outputs (MQTT, webhook, OPC UA write-back); unset = none"
    )
    edge_output_queue_max: int = Field(
        1000, gt=0, description="Messages each output holds while its endpoint is down; beyond it the oldest are dropped and counted"
    )
    edge_webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key signing webhook bodies (X-PQ-Signature header). Never logged"
    )
    edge_mqtt_password: SecretStr | None = Field(
        None, description="Password for the MQTT output's broker user (outputs file sets the user). Never logged"
    )
    edge_opcua_password: SecretStr | None = Field(
        None, description="Password for the OPC UA write-back user (outputs file sets the user). Never logged"
    )
    # --- end Edge / alerts ----------------------------------------------------------------------------

    # --- Shifts and handover (pq/shifts.py, pq/monitoring/handover.py) ---------------------------------
    shift_starts: str = Field(
        "A=06:00,B=14:00,C=22:00", description="Shift names and start times (plant local time, 24 h), in day order: "
        "the handover summary covers one shift"
    )
    plant_timezone: str = Field("UTC", description="IANA time zone of the plant's shift clock, e.g. Europe/Berlin")

    # --- OPC UA Alarms & Conditions server (issue 16: connectors/opcua/alarm_server.py, pq alarms serve) ---
    alarms_endpoint: str = Field(
        "opc.tcp://0.0.0.0:4850", description="Endpoint `pq alarms serve` listens on (the HMI connects here)"
    )
    alarms_poll_s: float = Field(
        1.0, gt=0, le=60, description="How often the A&C server reads alerts from the store and sends the changes "
        "to OPC UA clients"
    )
    alarms_allow_anonymous: bool = Field(
        True, description="Anonymous OPC UA sessions may browse and subscribe to alarms (never acknowledge or shelve: "
        "that needs a pq user with role operator or above)"
    )
    alarms_allow_none_policy: bool = Field(
        True, description="Also offer the unsecured None policy besides Basic256Sha256 / Aes256_Sha256_RsaPss "
        "SignAndEncrypt (passwords stay encrypted; messages are not signed). false in a plant"
    )
    alarms_trust_unknown_clients: bool = Field(
        False, description="Accept a secure session from an HMI whose certificate is not yet in PQ_PKI_DIR/alarm-clients/"
        "trusted, and add it there (trust on first use); false = refuse it and save it under alarm-clients/rejected"
    )
    # --- end OPC UA Alarms & Conditions server --------------------------------------------------------

    # --- Models (issue 6: models/) -------------------------------------------------------------------
    model_feature_set: str = Field(
        "default-1", description="Feature-set version `pq train` and `pq report robustness` use by default"
    )
    model_alarm_budget_per_h: float | None = Field(
        2.0, gt=0, description="Alert threshold rule: at most this many alerts per hour per line on validation "
        "(unset to use PQ_MODEL_TARGET_RECALL alone)"
    )
    model_target_recall: float | None = Field(
        None, gt=0, le=1, description="Alert threshold rule: catch at least this share of defects on validation "
        "(with a budget too, the budget wins)"
    )
    model_cv_folds: int = Field(3, ge=2, le=10, description="Validation folds (contiguous stretches of days and lots)")
    model_seed: int = Field(42, description="Random seed of training: the same data and seed give the same model")
    model_threads: int = Field(2, gt=0, description="LightGBM threads for training and batch scoring")
    model_min_labelled_parts: int = Field(
        200, gt=0, description="Training refuses fewer labelled parts than this (label delay: unlabelled parts are left out)"
    )
    model_min_defects: int = Field(
        10, gt=0, description="Training refuses fewer defective (or good) labelled parts than this"
    )
    model_label_precedence: Literal["inspection", "feedback"] = Field(
        "inspection", description="Which label wins when a part has both: the inspection result, or operator feedback "
        "(confirmed / false alarm) on its alert"
    )
    model_promotion_margin: float = Field(
        0.02, ge=0, le=1, description="Promotion refuses a model whose false-alarm rate or recall in any regime band is "
        "worse than production's by more than this (explicit, audited override)"
    )
    model_explain_top_n: int = Field(5, gt=0, le=50, description="Signals listed in a score's explanation")
    # --- end Models -----------------------------------------------------------------------------------

    @field_validator("shift_starts")
    @classmethod
    def _valid_shifts(cls, value: str) -> str:
        from pq.shifts import parse_shift_starts

        parse_shift_starts(value)  # ValueError -> one line naming the setting
        return value

    @field_validator("plant_timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from pq.shifts import zone

        zone(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("PQ_CONFIG_FILE", "pq.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))


def _describe_error(err: dict) -> str:
    name = ".".join(str(p) for p in err.get("loc", ()))
    got = err.get("input")
    if isinstance(got, SecretStr) or "password" in name or "secret" in name:
        got = "***"
    expected = err.get("msg", "a valid value").removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return f"unknown setting {ENV_PREFIX}{name.upper()} (see the settings table in README.md)"
    return f"setting {ENV_PREFIX}{name.upper()}: got {got!r}, expected {expected[0].lower() + expected[1:]}"


def load_settings(**overrides) -> Settings:
    """Build the settings once, turning a bad value into a one-line :class:`ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe_error(e) for e in exc.errors())) from None
    except (OSError, ValueError) as exc:  # unreadable or malformed pq.toml
        raise ConfigError(f"config file {os.environ.get('PQ_CONFIG_FILE', 'pq.toml')}: {exc}") from None


def settings_table() -> str:
    """The settings as a Markdown table (README and docs are generated from this)."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            default = "(secret)"
        shown = "" if default is None else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)
