"""What the OPC UA server offers for a tag map, compared with what pq expects: source schema changes.

Owns :func:`read_source_schema` (a few batched reads and browses: each mapped node's DataType,
EngineeringUnits, EURange and parent object, and the variables under those parents),
:class:`SchemaWatch` (the expected schema: the tag map's ``unit`` / ``data_type`` / ``eu_range``,
and where the map says nothing, what the server offered at the first successful connect, kept in a
JSON file beside the connector's spool) and :class:`SourceChange` (one difference, in plain words).
The session (:mod:`connectors.opcua.session`) runs the check at every connect and reconnect and when
the server announces a model change; it records each change as a ``source_change`` line event and
tells its listeners. Imports pq only through the session; asyncua here.

A change that makes values mean something else (a tag gone, another unit, data type or range)
*pauses* the scores that depend on the tag; a new variable under a mapped object is information.
A unit is compared only when the server publishes one (an EngineeringUnits property): many PLCs
do not, and silence is not a change.

Example::

    watch = SchemaWatch(tagmap.tags, path=Path("var/spool/connector-simulator.source-schema.json"))
    facts, children = await read_source_schema(client, nodes)
    changes = watch.compare(nodes, facts, children)   # [SourceChange(kind="unit", tag="melt_temp_c", ...)]
    watch.learn(facts, children)
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from asyncua import Client, ua

__all__ = ["NodeFacts", "SourceChange", "SchemaWatch", "read_source_schema", "MODEL_CHANGE_EVENT_TYPES",
           "NODE_GONE_CODES"]

logger = logging.getLogger(__name__)

# Both announce a change of the address space: nodes/references/data types (GeneralModelChange, a
# subtype of BaseModelChange) and property values such as EngineeringUnits or EURange (SemanticChange).
MODEL_CHANGE_EVENT_TYPES = (ua.ObjectIds.BaseModelChangeEventType, ua.ObjectIds.SemanticChangeEventType)
NODE_GONE_CODES = (ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid)

_UNIT_ALIASES = {"°c": "°c", "degc": "°c", "deg c": "°c", "cel": "°c", "celsius": "°c", "℃": "°c",
                 "°f": "°f", "degf": "°f", "deg f": "°f", "fah": "°f", "fahrenheit": "°f", "℉": "°f"}


def _norm_unit(unit: str | None) -> str:
    u = (unit or "").strip().lower()
    return _UNIT_ALIASES.get(u, u)


@dataclass(frozen=True)
class NodeFacts:
    """What the server says about one mapped node now."""

    present: bool
    status: str | None = None  # why it is not there (BadNodeIdUnknown)
    data_type: str | None = None  # "Double"
    unit: str | None = None  # EngineeringUnits display name, None when the server publishes no unit
    eu_range: tuple[float, float] | None = None
    parent: str | None = None  # node id of the object it hangs under
    parent_name: str | None = None


@dataclass(frozen=True)
class SourceChange:
    """One difference between the server and what pq expects, for one tag of one line.

    ``kind``: ``removed`` (the node is gone), ``unit``, ``data_type``, ``eu_range`` (all pause the
    scores that depend on the tag) or ``added`` (a variable no map knows under a mapped object).
    """

    line_id: str
    tag: str
    kind: str
    was: Any
    now: Any
    node_id: str
    parent: str | None = None  # kind "added": the display name of the mapped object it appeared under
    parent_id: str | None = None

    @property
    def pauses(self) -> bool:
        return self.kind != "added"

    @property
    def key(self) -> tuple:
        return (self.line_id, self.tag, self.kind, json.dumps(self.now, default=str))

    def what(self) -> str:
        """The change without the tag's name: '... now reported in °F (was °C)'."""
        if self.kind == "unit":
            return f"now reported in {self.now} (was {self.was})"
        if self.kind == "data_type":
            return f"now delivered as {self.now} (was {self.was})"
        if self.kind == "eu_range":
            return f"range on the server is now {_rng(self.now)} (was {_rng(self.was)})"
        if self.kind == "removed":
            return (f"disappeared from the server ({self.now})" if self.was else f"is not on the server ({self.now})")
        return f"new on the server under {self.parent}"

    def message(self, label: str | None = None) -> str:
        """The operator's sentence, e.g. 'melt temperature now reported in °F (was °C): scores paused for line-1'."""
        if self.kind == "added":
            return f"new tag under {self.parent}: {self.tag} (not mapped)"
        name = label or f"tag {self.tag}"
        return f"{name} {self.what()}: scores paused for {self.line_id}"

    def as_dict(self, ended: bool = False) -> dict:
        """The listener's and the line event's form."""
        return {"line_id": self.line_id, "tag": self.tag, "kind": self.kind, "was": self.was, "now": self.now,
                "node_id": self.node_id, "parent": self.parent, "pauses": self.pauses, "what": self.what(),
                "message": self.message(), "ended": ended}


def _rng(r) -> str:
    return "none" if not r else f"{r[0]:g} to {r[1]:g}"


# -- reading the server -----------------------------------------------------------------------------------
def _rv(nid: ua.NodeId, attribute: int) -> ua.ReadValueId:
    rv = ua.ReadValueId()
    rv.NodeId = nid
    rv.AttributeId = attribute
    return rv


def _bd(nid: ua.NodeId, ref: int, inverse: bool, node_class_mask: int = 0) -> ua.BrowseDescription:
    bd = ua.BrowseDescription()
    bd.NodeId = nid
    bd.BrowseDirection = ua.BrowseDirection.Inverse if inverse else ua.BrowseDirection.Forward
    bd.ReferenceTypeId = ua.NodeId(ref)
    bd.IncludeSubtypes = True
    bd.NodeClassMask = node_class_mask
    bd.ResultMask = ua.BrowseResultMask.All
    return bd


# Servers limit the operations per request (MaxNodesPerRead / MaxNodesPerBrowse, often 1000 or more)
_CHUNK = 500


async def _browse(client: Client, descriptions: list[ua.BrowseDescription]) -> list[list[ua.ReferenceDescription]]:
    results = []
    for k in range(0, len(descriptions), _CHUNK):
        params = ua.BrowseParameters()
        params.View = ua.ViewDescription()
        params.NodesToBrowse = descriptions[k:k + _CHUNK]
        params.RequestedMaxReferencesPerNode = 0
        results.extend(await client.uaclient.browse(params))
    out = []
    for res in results:
        refs = list(res.References or [])
        cp = res.ContinuationPoint
        while cp:  # a server that pages its answers (rare for a few hundred tags)
            more = await client.uaclient.browse_next(_next_params(cp))
            refs.extend(more[0].References or [])
            cp = more[0].ContinuationPoint
        out.append(refs if res.StatusCode.is_good() else [])
    return out


def _next_params(cp: bytes) -> ua.BrowseNextParameters:
    p = ua.BrowseNextParameters()
    p.ReleaseContinuationPoints = False
    p.ContinuationPoints = [cp]
    return p


async def _read(client: Client, items: list[ua.ReadValueId]) -> list[ua.DataValue]:
    out: list[ua.DataValue] = []
    for k in range(0, len(items), _CHUNK):
        params = ua.ReadParameters()
        params.NodesToRead = items[k:k + _CHUNK]
        out.extend(await client.uaclient.read(params))
    return out


def _nid(ref: ua.ReferenceDescription) -> ua.NodeId:
    """A reference's target as a plain NodeId (the service returns an ExpandedNodeId)."""
    n = ref.NodeId
    return ua.NodeId(n.Identifier, n.NamespaceIndex, n.NodeIdType)


def _type_name(nid: ua.NodeId | None) -> str | None:
    if nid is None:
        return None
    if nid.NamespaceIndex == 0 and isinstance(nid.Identifier, int):
        return ua.ObjectIdNames.get(nid.Identifier, nid.to_string())
    return nid.to_string()


async def read_source_schema(client: Client, nodes: dict[int, ua.NodeId]
                             ) -> tuple[dict[int, NodeFacts], dict[str, tuple[str, dict[str, str]]]]:
    """Facts per mapped node index, and per parent object {node id: (display name, {child browse name:
    child node id})}: four batched service calls (one more per 500 operations)."""
    ids = list(nodes)
    reads = await _read(client, [_rv(nodes[i], a) for i in ids for a in (ua.AttributeIds.NodeClass,
                                                                            ua.AttributeIds.DataType)])
    present: list[int] = []
    facts: dict[int, NodeFacts] = {}
    dtype: dict[int, str | None] = {}
    for k, i in enumerate(ids):
        cls, dt = reads[2 * k], reads[2 * k + 1]
        if cls.StatusCode is not None and not cls.StatusCode.is_good():
            facts[i] = NodeFacts(False, status=cls.StatusCode.name)
            continue
        if cls.Value is not None and cls.Value.Value != ua.NodeClass.Variable:
            facts[i] = NodeFacts(False, status=f"node class {ua.NodeClass(cls.Value.Value).name}, not a Variable")
            continue
        present.append(i)
        dtype[i] = _type_name(dt.Value.Value) if dt.Value is not None and dt.StatusCode.is_good() else None
    browse = await _browse(client, [d for i in present for d in (
        _bd(nodes[i], ua.ObjectIds.HasProperty, False), _bd(nodes[i], ua.ObjectIds.HierarchicalReferences, True))])
    props: list[tuple[int, str, ua.NodeId]] = []
    parents: dict[int, tuple[ua.NodeId, str]] = {}
    for k, i in enumerate(present):
        for ref in browse[2 * k]:
            if ref.BrowseName.Name in ("EngineeringUnits", "EURange"):
                props.append((i, ref.BrowseName.Name, _nid(ref)))
        for ref in browse[2 * k + 1]:
            parents[i] = (_nid(ref), ref.DisplayName.Text or ref.BrowseName.Name)
            break
    values = await _read(client, [_rv(nid, ua.AttributeIds.Value) for _, _, nid in props])
    unit: dict[int, str] = {}
    rng: dict[int, tuple[float, float]] = {}
    for (i, name, _), dv in zip(props, values):
        v = dv.Value.Value if dv.Value is not None and dv.StatusCode.is_good() else None
        if name == "EngineeringUnits" and v is not None and getattr(v, "DisplayName", None) is not None:
            unit[i] = v.DisplayName.Text or ""
        elif name == "EURange" and v is not None and hasattr(v, "Low"):
            rng[i] = (float(v.Low), float(v.High))
    for i in present:
        p = parents.get(i)
        facts[i] = NodeFacts(True, data_type=dtype.get(i), unit=unit.get(i), eu_range=rng.get(i),
                             parent=p[0].to_string() if p else None, parent_name=p[1] if p else None)
    parent_ids = {p[0].to_string(): p for p in parents.values()}
    kids = await _browse(client, [_bd(p[0], ua.ObjectIds.HierarchicalReferences, False,
                                      int(ua.NodeClass.Variable)) for p in parent_ids.values()])
    children = {pid: (p[1], {r.BrowseName.Name: _nid(r).to_string() for r in refs})
                for (pid, p), refs in zip(parent_ids.items(), kids)}
    return facts, children


# -- expected schema ------------------------------------------------------------------------------------------
class SchemaWatch:
    """The expected schema of one connection's tags and the comparison with what the server offers.

    Expected per tag: the map's ``unit``, ``data_type`` and ``eu_range`` where it gives them, else
    what the server offered the first time the tag was seen (kept in ``path``; delete that file to
    accept the server's current schema as the new normal). Expected children of a mapped object:
    those seen the first time the object was browsed.
    """

    def __init__(self, tags: Sequence[Any], path: Path | None = None):
        self.tags = tuple(tags)
        self.path = Path(path) if path else None
        self.seen: dict[str, dict] = {}  # node id (as mapped) -> {data_type, unit, eu_range}
        self.children: dict[str, list[str]] = {}  # parent node id -> child browse names
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.seen = dict(data.get("nodes", {}))
            self.children = {k: list(v) for k, v in data.get("children", {}).items()}
        except (OSError, ValueError, AttributeError) as exc:  # start afresh, say so: the map still applies
            logger.warning("source schema %s unreadable (%s); learning it again from the server", self.path, exc)
            self.seen, self.children = {}, {}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"nodes": self.seen, "children": self.children}, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # detection still works in this process; only a restart would re-learn
            logger.warning("cannot keep the source schema in %s: %s", self.path, exc)

    def expected(self, i: int) -> dict:
        t = self.tags[i]
        seen = self.seen.get(t.node_id, {})
        rng = getattr(t, "eu_range", None) or seen.get("eu_range")
        return {"unit": t.unit if t.unit else seen.get("unit"),
                "data_type": getattr(t, "data_type", None) or seen.get("data_type"),
                "eu_range": tuple(rng) if rng else None, "present": bool(seen)}

    def learn(self, facts: dict[int, NodeFacts], children: dict[str, tuple[str, dict[str, str]]]) -> None:
        """Remember what is seen the first time (per tag, per parent object); never overwrite it."""
        changed = False
        for i, f in facts.items():
            node_id = self.tags[i].node_id
            if f.present and node_id not in self.seen:
                self.seen[node_id] = {"data_type": f.data_type, "unit": f.unit,
                                      "eu_range": list(f.eu_range) if f.eu_range else None}
                changed = True
        for pid, (_, kids) in children.items():
            if pid not in self.children:
                self.children[pid] = sorted(kids)
                changed = True
        if changed:
            self._save()

    def accept_child(self, parent_id: str | None, name: str) -> None:
        """A new variable under a mapped object was reported: it is known from now on."""
        if parent_id is None:
            return
        kids = self.children.setdefault(parent_id, [])
        if name not in kids:
            kids.append(name)
            self._save()

    def compare(self, nodes: dict[int, ua.NodeId], facts: dict[int, NodeFacts],
                children: dict[str, tuple[str, dict[str, str]]]) -> list[SourceChange]:
        """Every difference now (not only new ones): the session keeps what was already reported."""
        out: list[SourceChange] = []
        for i, f in facts.items():
            t = self.tags[i]
            exp = self.expected(i)
            ch = lambda kind, was, now: SourceChange(t.line_id, t.name, kind, was, now, t.node_id)  # noqa: E731
            if not f.present:
                out.append(ch("removed", exp["present"], f.status))
                continue
            if f.unit is not None and exp["unit"] is not None and _norm_unit(f.unit) != _norm_unit(exp["unit"]):
                out.append(ch("unit", exp["unit"], f.unit))
            if f.data_type and exp["data_type"] and f.data_type != exp["data_type"]:
                out.append(ch("data_type", exp["data_type"], f.data_type))
            unit_changed = bool(out) and out[-1].kind == "unit" and out[-1].tag == t.name
            if f.eu_range and exp["eu_range"] and not unit_changed and not all(  # a new unit converts the range too
                    math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(f.eu_range, exp["eu_range"])):
                out.append(ch("eu_range", list(exp["eu_range"]), list(f.eu_range)))
        mapped = {n.to_string() for n in nodes.values()} | {t.node_id for t in self.tags}
        for pid, (pname, kids) in children.items():
            known = set(self.children.get(pid, kids))
            line = next((self.tags[i].line_id for i, f in facts.items() if f.parent == pid), None)
            for name, nid in sorted(kids.items()):
                if name not in known and nid not in mapped:
                    out.append(SourceChange(line or self.tags[0].line_id, name, "added", None, nid, nid, parent=pname, parent_id=pid))
        return out
