"""The playbook: signal or defect mechanism -> plain-words action, edited by quality engineers.

Owns parsing and validation of the playbook TOML (format documented in ``default_playbook.toml``
and ``docs/alarms.md``) and the lookup of an alert's cause, label and action. The UI validates an
edit with :func:`parse_playbook` before storing it in ``playbook_versions``; the edge runtime loads
the newest stored version, falling back to a file (see :class:`PlaybookLoader`). Must not import
connectors, models, ui or simulators.

Example::

    pb = parse_playbook(Path("playbook.toml").read_text(), source="playbook.toml")
    pb.action_for("melt_temp_c", "low", {"material_lot": "L123", "serial": "S1"})
"""

from __future__ import annotations

import logging
import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from pq.errors import ConfigError

__all__ = ["Playbook", "SignalEntry", "MechanismEntry", "parse_playbook", "load_playbook_file",
           "PlaybookLoader", "DEFAULT_PLAYBOOK_PATH", "PLACEHOLDERS", "signal_label", "signal_unit"]

logger = logging.getLogger(__name__)

DEFAULT_PLAYBOOK_PATH = Path(__file__).with_name("default_playbook.toml")

PLACEHOLDERS = frozenset({"serial", "line_id", "station", "product", "material_lot", "shift", "supplier",
                          "signal", "value", "normal_lo", "normal_hi", "unit"})
_MATCH_KEYS = ("product", "material_lot", "supplier", "shift", "station")
_ACTION_KEYS = ("high", "low", "action")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# Unit suffixes of signal names (CONVENTIONS: names end in their unit), longest first.
_UNIT_SUFFIXES = (
    ("_mm_s", "mm/s"), ("_l_min", "l/min"), ("_c", "°C"), ("_bar", "bar"), ("_pct", "%"), ("_s", "s"),
    ("_ms", "ms"), ("_mm", "mm"), ("_rpm", "rpm"), ("_kn", "kN"), ("_n", "N"), ("_kw", "kW"),
    ("_a", "A"), ("_v", "V"), ("_hz", "Hz"), ("_g", "g"), ("_kg", "kg"), ("_m", "m"),
)


def signal_unit(name: str) -> str:
    """The unit a snake_case signal name ends in (``melt_temp_c`` -> ``°C``), '' when none."""
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


def signal_label(name: str) -> str:
    """Words from a signal name when the playbook has no label: ``melt_temp_c`` -> ``Melt temp``."""
    base = name
    for suffix, _unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            break
    words = base.replace("_", " ").strip() or name
    return words[0].upper() + words[1:]


@dataclass(frozen=True)
class _When:
    match: tuple[tuple[str, str], ...]
    actions: Mapping[str, str]

    def matches(self, context: Mapping[str, Any]) -> bool:
        for key, pattern in self.match:
            got = context.get(key)
            if got is None:
                return False
            got = str(got)
            if pattern.endswith("*"):
                if not got.startswith(pattern[:-1]):
                    return False
            elif got != pattern:
                return False
        return True


@dataclass(frozen=True)
class SignalEntry:
    name: str
    label: str
    unit: str
    actions: Mapping[str, str]  # high / low / action
    when: tuple[_When, ...] = ()


@dataclass(frozen=True)
class MechanismEntry:
    key: str
    label: str
    signals: tuple[str, ...]
    action: str


class _Blank(dict):
    # A placeholder with no value in this context reads as a dash rather than raising mid-alert.
    def __missing__(self, key):
        return "–"


@dataclass(frozen=True)
class Playbook:
    """A validated playbook. Immutable: a reload builds a new one."""

    source: str
    version: int
    default_action: str
    severity_high: float
    signals: Mapping[str, SignalEntry] = field(default_factory=dict)
    mechanisms: Mapping[str, MechanismEntry] = field(default_factory=dict)

    def cause_for(self, signal: str) -> str:
        """The alert cause of a signal: its mechanism key when one lists it, else the signal itself."""
        for mech in self.mechanisms.values():
            if signal in mech.signals:
                return mech.key
        return signal

    def label_for(self, name: str) -> str:
        if name in self.mechanisms:
            return self.mechanisms[name].label
        entry = self.signals.get(name)
        return entry.label if entry else signal_label(name)

    def unit_for(self, signal: str) -> str:
        entry = self.signals.get(signal)
        return entry.unit if entry else signal_unit(signal)

    def action_for(self, signal: str, direction: str | None, context: Mapping[str, Any]) -> str:
        """The action text for a signal deviating in ``direction`` ('high'/'low'/None), placeholders filled.

        Precedence: a mechanism listing the signal, a matching ``when`` override, the signal's
        direction-specific text, the signal's ``action``, the playbook default.
        """
        text = None
        for mech in self.mechanisms.values():
            if signal in mech.signals:
                text = mech.action
                break
        entry = self.signals.get(signal)
        if text is None and entry is not None:
            for when in entry.when:
                if when.matches(context):
                    text = when.actions.get(direction or "") or when.actions.get("action")
                    if text:
                        break
            if text is None:
                text = entry.actions.get(direction or "") or entry.actions.get("action")
        if text is None:
            text = self.default_action
        values = _Blank({k: v for k, v in context.items() if v is not None})
        values.setdefault("signal", self.label_for(signal))
        values.setdefault("unit", self.unit_for(signal))
        return string.Formatter().vformat(text, (), values)


def _err(source: str, where: str, msg: str) -> ConfigError:
    return ConfigError(f"playbook {source}: {where}: {msg}")


def _check_text(source: str, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _err(source, where, f"expected non-empty text, got {value!r}")
    try:
        names = [f for _lit, f, _spec, _conv in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise _err(source, where, f"bad braces in {value!r} ({exc}); write {{{{ and }}}} for a literal brace") from None
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        raise _err(source, where, f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}, "
                                  f"expected some of {', '.join(sorted(PLACEHOLDERS))}")
    return value.strip()


def _check_keys(source: str, where: str, table: Any, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(table, dict):
        raise _err(source, where, f"expected a table, got {type(table).__name__}")
    extra = sorted(set(table) - allowed)
    if extra:
        raise _err(source, where, f"unknown key(s) {', '.join(extra)}, expected some of {', '.join(sorted(allowed))}")
    return table


def parse_playbook(text: str, source: str = "<text>") -> Playbook:
    """Parse and validate playbook TOML; raises :class:`ConfigError` naming the line or key.

    Example::

        parse_playbook('[signals.melt_temp_c]\\nlow = "Check heaters"', source="ui edit")
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message carries "(at line N, column M)"
        raise ConfigError(f"playbook {source}: TOML syntax error: {exc}") from None
    _check_keys(source, "top level", doc, {"version", "defaults", "signals", "mechanisms"})
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version != 1:
        raise _err(source, "version", f"expected 1, got {version!r}")
    defaults = _check_keys(source, "defaults", doc.get("defaults", {}), {"action", "severity_high"})
    default_action = _check_text(source, "defaults.action",
                                 defaults.get("action", "Set part {serial} aside for inspection and tell the shift lead."))
    severity_high = defaults.get("severity_high", 0.8)
    if isinstance(severity_high, bool) or not isinstance(severity_high, (int, float)) or not 0 < severity_high <= 1:
        raise _err(source, "defaults.severity_high", f"expected a probability in (0, 1], got {severity_high!r}")

    signals: dict[str, SignalEntry] = {}
    for name, body in _check_keys(source, "signals", doc.get("signals", {}), set(doc.get("signals", {}))).items():
        where = f"signals.{name}"
        if not _NAME_RE.match(name):
            raise _err(source, where, "signal names are snake_case ending in their unit, e.g. melt_temp_c")
        body = _check_keys(source, where, body, {"label", "unit", "when", *_ACTION_KEYS})
        actions = {k: _check_text(source, f"{where}.{k}", body[k]) for k in _ACTION_KEYS if k in body}
        whens = []
        raw_when = body.get("when", [])
        if not isinstance(raw_when, list):
            raise _err(source, f"{where}.when", "expected [[signals.NAME.when]] tables")
        for i, w in enumerate(raw_when):
            wwhere = f"{where}.when[{i}]"
            w = _check_keys(source, wwhere, w, {*_MATCH_KEYS, *_ACTION_KEYS})
            match = tuple((k, str(w[k])) for k in _MATCH_KEYS if k in w)
            if not match:
                raise _err(source, wwhere, f"needs at least one of {', '.join(_MATCH_KEYS)} to match on")
            wact = {k: _check_text(source, f"{wwhere}.{k}", w[k]) for k in _ACTION_KEYS if k in w}
            if not wact:
                raise _err(source, wwhere, "needs high, low or action text")
            whens.append(_When(match, wact))
        label = body.get("label", signal_label(name))
        unit = body.get("unit", signal_unit(name))
        if not isinstance(label, str) or not isinstance(unit, str):
            raise _err(source, where, f"label and unit must be text, got {label!r}, {unit!r}")
        signals[name] = SignalEntry(name, label, unit, actions, tuple(whens))

    mechanisms: dict[str, MechanismEntry] = {}
    owner: dict[str, str] = {}
    for key, body in _check_keys(source, "mechanisms", doc.get("mechanisms", {}), set(doc.get("mechanisms", {}))).items():
        where = f"mechanisms.{key}"
        if not _NAME_RE.match(key):
            raise _err(source, where, "mechanism keys are snake_case")
        body = _check_keys(source, where, body, {"label", "signals", "action"})
        sigs = body.get("signals")
        if not isinstance(sigs, list) or not sigs or not all(isinstance(s, str) for s in sigs):
            raise _err(source, f"{where}.signals", f"expected a non-empty list of signal names, got {sigs!r}")
        for s in sigs:
            if s in owner:
                raise _err(source, f"{where}.signals", f"{s!r} is already in mechanisms.{owner[s]}; a signal has one mechanism")
            owner[s] = key
        if "action" not in body:
            raise _err(source, f"{where}.action", "missing; a mechanism needs an action")
        mechanisms[key] = MechanismEntry(key, str(body.get("label", signal_label(key))), tuple(sigs),
                                         _check_text(source, f"{where}.action", body["action"]))
    return Playbook(source, version, default_action, float(severity_high), signals, mechanisms)


def load_playbook_file(path: Path) -> Playbook:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"playbook {path}: cannot read ({exc.strerror})") from None
    return parse_playbook(text, source=str(path))


class PlaybookLoader:
    """Keeps the current playbook; a failed reload keeps the previous one and says why, once.

    ``latest_stored`` returns (version id, TOML text) of the newest stored playbook or None; it
    is called off the decision path. The stored version wins over the file. An empty file is not
    adopted (it is valid TOML, but what a reload sees while an editor saves in place: truncated,
    not yet written); the previous playbook stays and the status says so.
    """

    def __init__(self, path: Path | None = None,
                 latest_stored: Callable[[], tuple[int, str] | None] | None = None):
        self.path = Path(path) if path else DEFAULT_PLAYBOOK_PATH
        self._latest_stored = latest_stored
        self.current: Playbook = load_playbook_file(DEFAULT_PLAYBOOK_PATH)
        self.error: str | None = None
        self._seen: tuple | None = None
        self._store_down = False
        self.reload()

    def reload(self) -> bool:
        """Re-read the store / file if changed. Returns True when a new playbook was adopted."""
        key, text, source = None, None, str(self.path)
        stored = None
        if self._latest_stored is not None:
            try:
                stored = self._latest_stored()
            except Exception as exc:  # noqa: BLE001 - a store hiccup must not lose the playbook; logged once
                if not self._store_down:
                    logger.warning("playbook: cannot read stored versions (%s); keeping %s", exc, self.current.source)
                    self._store_down = True
                return False  # keep what we have rather than fall back to the file mid-outage
            if self._store_down:
                logger.info("playbook: stored versions readable again")
                self._store_down = False
        if stored is not None:
            key, text, source = ("store", stored[0]), stored[1], f"stored version {stored[0]}"
        else:
            try:
                stat = self.path.stat()
                key = ("file", str(self.path), stat.st_mtime_ns, stat.st_size)
            except OSError as exc:
                key = ("missing", str(self.path))
                if key != self._seen:
                    self._seen = key
                    self.error = f"playbook {self.path}: cannot read ({exc.strerror}); using {self.current.source}"
                    logger.warning("%s", self.error)
                return False
        if key == self._seen:
            return False
        self._seen = key
        try:
            if text is None:
                try:
                    text = self.path.read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError(f"playbook {self.path}: cannot read ({exc.strerror})") from None
                if not text.strip():
                    self.error = f"playbook {self.path}: the file is empty (being saved?); keeping {self.current.source}"
                    logger.warning("%s", self.error)
                    return False
            pb = parse_playbook(text, source=source)
        except ConfigError as exc:
            self.error = f"{exc}; keeping {self.current.source}"
            logger.error("%s", self.error)
            return False
        self.current, self.error = pb, None
        logger.info("playbook %s loaded (%d signals, %d mechanisms)", pb.source, len(pb.signals), len(pb.mechanisms))
        return True
