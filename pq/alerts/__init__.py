"""Alerts: alarm discipline (ISA-18.2 style), explanations in operator words, the playbook.

Modules: ``discipline`` (state machine: dedup per line + cause, floods, shelving, clearing),
``episodes`` (operator alarms as k of the last n parts at risk with one cause; a pure function),
``explain`` (sentences), ``playbook`` (TOML -> actions), and ``actions``
(operator actions, owned by the UI). Must not import connectors, models, ui or simulators.
"""

from pq.alerts.discipline import AlarmBoard, Alert, Change
from pq.alerts.playbook import Playbook, PlaybookLoader, parse_playbook

__all__ = ["AlarmBoard", "Alert", "Change", "Playbook", "PlaybookLoader", "parse_playbook"]
