"""Part and inspection events assembled from tag values, as a tag map's [part_event]/[inspection] say.

Owns :class:`EventAssembler`. A new value of the trigger tag (by default the serial tag) marks an
event; it is completed when the notification burst it arrived in has been processed. Each of the
event's other tags contributes its value with the latest *source timestamp at or before the
trigger's*, from a short history per tag: one publish may carry several cycles, and servers group
notifications by monitored item rather than by write order, so "the latest value" would mix cycles.
Servers write the trigger last (or with the same source time), as PLC handshakes do.

Rules: the serial is the trigger's text (or its number printed without a trailing .0); an empty or
not-Good serial makes no event (counted ``bad_serial``). ``cycle_end`` is the end tag's value
(a DateTime) or, without one, the trigger's source time; ``cycle_start`` likewise or None. Context
values that are not Good are stored as null and listed in ``context["_not_good"]``. A serial seen
already (initial values after a reconnect) makes no second event. An inspection whose result is
missing or not Good makes no event (counted ``bad_result``): a label is never guessed.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from connectors.opcua.convert import us_to_dt
from connectors.tagmap import InspectionSpec, PartEventSpec, TagMap

__all__ = ["EventAssembler"]


class _Latest:
    __slots__ = ("ts_us", "value", "status", "text")

    def __init__(self, ts_us: int = 0, value: float = math.nan, status: int = 0, text: str | None = None) -> None:
        self.ts_us, self.value, self.status, self.text = ts_us, value, status, text


_HISTORY = 512  # values kept per event tag: several publishes' worth of cycles at any realistic rate


def _as_text(latest: _Latest) -> str | None:
    if latest.text is not None:
        return latest.text
    v = latest.value
    if v != v:
        return None
    return str(int(v)) if float(v).is_integer() else repr(v)


def _as_time(latest: _Latest | None) -> datetime | None:
    if latest is None or latest.value != latest.value or latest.status & 0x80000000:
        return None
    return us_to_dt(int(round(latest.value * 1e6)))


class EventAssembler:
    """Watches the tags that make part and inspection events; emits dicts ready for the spool."""

    def __init__(self, tagmap: TagMap, index: dict[tuple[str, str], int]):
        self.index = index
        self.latest: dict[int, deque] = {}
        self._triggers: dict[int, list[tuple[str, object]]] = {}
        self._pending: list[tuple[int, str, object, _Latest]] = []
        self._last_serial: dict[tuple[str, int], str] = {}
        self._at_us = 0
        self.bad_serial = 0
        self.bad_result = 0
        for spec in tagmap.part_events:
            self._watch(("part", spec), spec.line_id,
                        [spec.serial, spec.end, spec.start, spec.trigger, spec.product, spec.material_lot,
                         spec.shift, *spec.context], spec.trigger or spec.serial)
        for spec in tagmap.inspections:
            self._watch(("inspection", spec), spec.line_id, [spec.serial, spec.result, spec.defect_code,
                                                            spec.trigger], spec.trigger or spec.serial)
        self.watched = frozenset(self.latest)

    def _watch(self, what, line_id: str, names: list[str | None], trigger: str) -> None:
        for name in names:
            if name is not None and (line_id, name) in self.index:
                self.latest.setdefault(self.index[(line_id, name)], deque(maxlen=_HISTORY))
        if (line_id, trigger) in self.index:
            self._triggers.setdefault(self.index[(line_id, trigger)], []).append(what)

    def update(self, tag: int, ts_us: int, value: float, status: int, text: str | None) -> None:
        """Record a watched tag's new value (call only for tags in ``watched``)."""
        v = _Latest(ts_us, value, status, text)
        self.latest[tag].append(v)
        for what in self._triggers.get(tag, ()):
            self._pending.append((ts_us, what[0], what[1], v))

    def finish(self) -> tuple[list[dict], list[dict]]:
        """Complete the events marked during this burst: (parts, inspections)."""
        parts, inspections = [], []
        pending, self._pending = self._pending, []
        pending.sort(key=lambda p: p[0])  # stable: same-time triggers keep their arrival order
        for ts_us, kind, spec, trig in pending:
            self._at_us = ts_us
            ev = self._part(spec, trig) if kind == "part" else self._inspection(spec, trig)
            if ev is not None:
                (parts if kind == "part" else inspections).append(ev)
        return parts, inspections

    def _get(self, line_id: str, name: str | None) -> _Latest | None:
        """The tag's value with the latest source time at or before the trigger being completed."""
        if name is None:
            return None
        i = self.index.get((line_id, name))
        hist = None if i is None else self.latest.get(i)
        if not hist:
            return None
        at = self._at_us
        for v in reversed(hist):
            if v.ts_us <= at:
                return v
        return None

    def _serial(self, kind: str, spec, trig: _Latest) -> str | None:
        latest = trig if spec.trigger is None else self._get(spec.line_id, spec.serial)
        serial = _as_text(latest) if latest is not None else None
        if not serial or latest.status & 0xC0000000:
            self.bad_serial += 1
            return None
        key = (kind, id(spec))
        if self._last_serial.get(key) == serial:
            return None  # initial value after a (re)subscribe, or a trigger that toggled without a new part
        self._last_serial[key] = serial
        return serial

    def _part(self, spec: PartEventSpec, trig: _Latest) -> dict | None:
        serial = self._serial("part", spec, trig)
        if serial is None:
            return None
        end = _as_time(self._get(spec.line_id, spec.end)) or us_to_dt(trig.ts_us)
        context, not_good = {}, []
        for name in spec.context:
            latest = self._get(spec.line_id, name)
            if latest is None or latest.status & 0xC0000000:
                context[name] = None
                not_good.append(name)
            else:
                context[name] = latest.text if latest.text is not None else \
                    (None if latest.value != latest.value else latest.value)
        if not_good:
            context["_not_good"] = not_good
        texts = {k: _as_text(self._get(spec.line_id, getattr(spec, k))) if getattr(spec, k) else None
                 for k in ("product", "material_lot", "shift")}
        return {"line_id": spec.line_id, "serial": serial,
                "cycle_start": _as_time(self._get(spec.line_id, spec.start)), "cycle_end": end,
                **texts, "context": context}

    def _inspection(self, spec: InspectionSpec, trig: _Latest) -> dict | None:
        serial = self._serial("inspection", spec, trig)
        if serial is None:
            return None
        result = self._get(spec.line_id, spec.result)
        result_text = _as_text(result) if result is not None else None
        if result_text is None or result.status & 0xC0000000:
            self.bad_result += 1  # no usable verdict: a label must not be guessed
            return None
        code = _as_text(self._get(spec.line_id, spec.defect_code)) if spec.defect_code else None
        return {"line_id": spec.line_id, "serial": serial, "defect": result_text not in spec.ok_values,
                "defect_code": code or None, "inspected_at": us_to_dt(trig.ts_us),
                "source": "inspection"}
