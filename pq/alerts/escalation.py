"""Escalation rules: per severity, after how many unacknowledged minutes an alarm goes to which duty role.

Owns parsing and validation of the rules TOML (format in ``default_escalation.toml`` and
``docs/alarms.md``; errors name the file, the line for TOML syntax, and the key) and the pure
decision :func:`next_step`: given an open alert, the time now and the rules, the escalation step
that is due, if any. Only ``active`` alerts (raised, not acknowledged) escalate: acknowledged,
shelved, suppressed and cleared ones do not. Steps are taken in order, one at a time; the timer runs
from ``raised_at``. Who holds the role comes from the roster (``pq/alerts/roster.py``); the edge
runs both in its periodic tick (``pq/edge/duty.py``). Must not import connectors, models, ui or
simulators.

Example::

    rules = parse_rules('[[high]]\\nafter_min = 5\\nrole = "shift_lead"\\n', source="esc.toml")
    next_step({"state": "active", "severity": "high", "raised_at": t0, "escalation_level": 0},
              t0 + timedelta(minutes=6), rules)     # (1, Step(after_min=5.0, role='shift_lead'))
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from pq.alerts.roster import DUTY_ROLES
from pq.errors import ConfigError

__all__ = ["Step", "EscalationRules", "parse_rules", "load_rules", "next_step", "DEFAULT_ESCALATION_PATH",
           "SEVERITY_KEYS"]

DEFAULT_ESCALATION_PATH = Path(__file__).with_name("default_escalation.toml")
SEVERITY_KEYS = ("high", "medium", "low")  # mirrors pq.alerts.discipline.SEVERITIES


@dataclass(frozen=True)
class Step:
    after_min: float
    role: str


@dataclass(frozen=True)
class EscalationRules:
    steps: Mapping[str, tuple[Step, ...]]  # severity -> steps in order
    source: str = "<text>"

    def for_severity(self, severity: str | None) -> tuple[Step, ...]:
        return self.steps.get(severity or "", ())


def _err(source: str, where: str, msg: str) -> ConfigError:
    return ConfigError(f"escalation rules {source}: {where}: {msg}")


def parse_rules(text: str, source: str = "<text>") -> EscalationRules:
    """Parse and validate rules TOML; raises :class:`ConfigError` naming the file and the line or key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message carries "(at line N, column M)"
        raise ConfigError(f"escalation rules {source}: TOML syntax error: {exc}") from None
    extra = sorted(set(doc) - {"version", *SEVERITY_KEYS})
    if extra:
        raise _err(source, "top level", f"unknown key(s) {', '.join(extra)}; expected version, "
                   f"{', '.join(SEVERITY_KEYS)}")
    version = doc.get("version", 1)
    if isinstance(version, bool) or version != 1:
        raise _err(source, "version", f"expected 1, got {version!r}")
    steps: dict[str, tuple[Step, ...]] = {}
    for sev in SEVERITY_KEYS:
        raw = doc.get(sev, [])
        if not isinstance(raw, list):
            raise _err(source, sev, f"expected a list of steps ([[{sev}]] tables), got {type(raw).__name__}")
        out: list[Step] = []
        for i, item in enumerate(raw, 1):
            where = f"{sev}[{i}]"
            if not isinstance(item, dict):
                raise _err(source, where, f"expected a table with after_min and role, got {item!r}")
            unknown = sorted(set(item) - {"after_min", "role"})
            if unknown:
                raise _err(source, where, f"unknown key(s) {', '.join(unknown)}; expected after_min, role")
            after = item.get("after_min")
            if isinstance(after, bool) or not isinstance(after, (int, float)) or not after > 0:
                raise _err(source, f"{where}.after_min", f"expected minutes > 0, got {after!r}")
            if out and after <= out[-1].after_min:
                raise _err(source, f"{where}.after_min",
                           f"must be later than the step before ({out[-1].after_min:g} min), got {after:g}")
            role = item.get("role")
            if role not in DUTY_ROLES:
                raise _err(source, f"{where}.role", f"expected one of {', '.join(DUTY_ROLES)}, got {role!r}")
            out.append(Step(float(after), role))
        steps[sev] = tuple(out)
    return EscalationRules(steps, source)


def load_rules(path: Path | str | None = None) -> EscalationRules:
    """The rules from ``path`` (``PQ_ESCALATION_FILE``), or the shipped default when None."""
    path = Path(path) if path is not None else DEFAULT_ESCALATION_PATH
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"escalation rules {path}: cannot read ({exc.strerror})") from None
    return parse_rules(text, source=str(path))


def next_step(alert: Mapping[str, Any], now: datetime, rules: EscalationRules) -> tuple[int, Step] | None:
    """The due step as (its level, 1-based; the step), or None: not active, no more steps, not yet due."""
    if alert.get("state") != "active":
        return None
    steps = rules.for_severity(alert.get("severity"))
    level = int(alert.get("escalation_level") or 0)
    if level >= len(steps):
        return None
    step = steps[level]
    if (now - alert["raised_at"]).total_seconds() < step.after_min * 60:
        return None
    return level + 1, step
