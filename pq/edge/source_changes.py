"""Scores paused because the line's server changed under the tag map: the edge's side of source schema changes.

Owns :class:`SourcePauses`: the signals whose meaning changed on the server (a tag gone, another
unit, data type or range; reported by the connector through the listener hook ``on_source_change``),
each with its plain reason, and which of them a part's features depend on. A part that depends on
a paused signal is "not scored" with that reason, never scored on the wrong unit; a part that does
not is scored as usual; when the server is back to what the map expects the pause ends by itself.
A new, unmapped tag on the server is information only (the connector's line event), never a pause.
Must not import connectors, models, ui or simulators.

Example::

    pauses = SourcePauses("line-1")
    pauses.apply([{"line_id": "line-1", "tag": "melt_temp_c", "kind": "unit", "pauses": True, "ended": False,
                   "what": "now reported in °F (was °C)"}])
    pauses.problems({"melt_temp_c", "mould_temp_c"}, label=str.capitalize, cycle_start_ns=0)
    # -> ['Melt_temp_c now reported in °F (was °C): scores paused for line-1']
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Mapping

__all__ = ["SourcePauses", "signals_of"]


def signals_of(fc: Any) -> set[str]:
    """The signals a feature computer's vector depends on: its tags and its context values (``ctx__<name>``)."""
    ctx = {n.split("__")[1] for n in getattr(fc, "feature_names", ()) if n.startswith("ctx__")}
    return set(fc.tags) | ctx


class SourcePauses:
    def __init__(self, line_id: str):
        self.line_id = line_id
        self.paused: dict[tuple[str, str], Mapping[str, Any]] = {}  # (tag, kind) -> the connector's change row
        # A pause that ended: the cycle under way still holds values from before, up to this source time (ns)
        self.settling: dict[tuple[str, str], tuple[int, Mapping[str, Any]]] = {}

    def apply(self, changes: Iterable[Mapping[str, Any]], last_ts_ns: Callable[[str], int | None] = lambda t: None
              ) -> bool:
        """Take the connector's change rows (ended ones first); True when the set of pauses changed.
        ``last_ts_ns(tag)``: the newest sample time of the tag when a pause ends (parts that began before
        it mix values from before and after, so they stay unscored)."""
        changed = False
        for c in changes:
            if c.get("line_id") != self.line_id or not c.get("pauses"):
                continue
            key = (c["tag"], c["kind"])
            if c.get("ended"):
                ended = self.paused.pop(key, None)
                if ended is not None:
                    changed = True
                    until = last_ts_ns(c["tag"])
                    if until is not None:
                        self.settling[key] = (until, ended)
            else:
                self.settling.pop(key, None)
                changed |= self.paused.get(key) != c
                self.paused[key] = c
        return changed

    @property
    def active(self) -> bool:
        """Anything to check a part against (False nearly always: the decision path skips the rest)."""
        return bool(self.paused or self.settling)

    @property
    def signals(self) -> set[str]:
        return {tag for tag, _ in self.paused}

    def problems(self, depends_on: Collection[str], label: Callable[[str], str], cycle_start_ns: int) -> list[str]:
        """The reasons a part depending on ``depends_on`` must not be scored (empty: score it)."""
        out = [self._reason(c, label) for (tag, _), c in self.paused.items() if tag in depends_on]
        for key, (until, c) in list(self.settling.items()):
            if cycle_start_ns > until:
                del self.settling[key]  # parts come in order: later ones began after the server was back
            elif key[0] in depends_on:
                out.append(f"{label(c['tag'])} changed on the server during this cycle ({c['what']}); it is back "
                           "to normal for the next part")
        return out

    def reason(self, label: Callable[[str], str]) -> str:
        """Every pause in one line (the line's degraded reason between parts)."""
        return "; ".join(self._reason(c, label) for c in self.paused.values())

    def _reason(self, c: Mapping[str, Any], label: Callable[[str], str]) -> str:
        return f"{label(c['tag'])} {c['what']}: scores paused for {self.line_id}"
