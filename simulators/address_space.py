"""The OPC UA address space of the simulator: which objects and variables exist, their node ids,
browse names, descriptions, types, units and initial values.

Owns the node layout (OPC 40077 spirit: the ``Simulator`` control object, and per line
Identification, a per-line Scenario override, the QualityGate and one folder per
:data:`~simulators.signals.FOLDERS` entry holding the signals with their EngineeringUnits and
EURange properties) and its creation in one ``add_nodes`` call. It does not own what happens when a
client writes a node or calls a method: :class:`~simulators.server.SimulatorServer` hooks those.
Imports nothing of ``pq``.

Example::

    nodes = NodeBatch(ns)
    sim, control = add_simulator_object(nodes, scenario="normal", speed=1.0, paused=False,
                                        values_published=0, values_written=0, lines=1, seed=7)
    line = add_line(nodes, 0, "line-1", seed=7, scenario_override="", last_values=[None] * len(SIGNALS))
    aspace = await nodes.add_to(server)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from asyncua import Server, ua

from .security import APPLICATION_URI
from .signals import FOLDERS, GATE_FOLDER, SIGNALS, SIMULATOR_FOLDER, SignalSpec

VTYPE = {
    "double": ua.VariantType.Double,
    "int": ua.VariantType.Int64,
    "bool": ua.VariantType.Boolean,
    "string": ua.VariantType.String,
    "datetime": ua.VariantType.DateTime,
}
_DATATYPE = {
    "double": ua.ObjectIds.Double,
    "int": ua.ObjectIds.Int64,
    "bool": ua.ObjectIds.Boolean,
    "string": ua.ObjectIds.String,
    "datetime": ua.ObjectIds.DateTime,
}
GATE_VARIABLES = (  # one per signals.GATE_NAMES: name, initial value, types, description
    ("Quarantine", False, ua.VariantType.Boolean, ua.ObjectIds.Boolean, "True: divert the part to quarantine"),
    ("RiskScore", 0.0, ua.VariantType.Double, ua.ObjectIds.Double, "Defect risk of the part, 0..1"),
    ("RiskSerial", "", ua.VariantType.String, ua.ObjectIds.String, "Serial of the part the request is about"),
)
_INITIAL = {"double": 0.0, "int": 0, "bool": False, "string": "", "datetime": datetime(1970, 1, 1, tzinfo=timezone.utc)}
_OBJECTS = ua.NodeId(ua.ObjectIds.ObjectsFolder)


def _unece_id(code: str | None) -> int:
    if not code:
        return -1
    v = 0
    for ch in code:
        v = (v << 8) | ord(ch)
    return v


def _dv_of(value, vtype) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype))


class NodeBatch:
    """Collects the nodes to create, in order, and each variable's initial DataValue.

    One ``add_nodes`` call for the whole space is much faster than a call per node, and the initial
    DataValues are set afterwards because ``add_nodes`` keeps only the Variant, not the status code
    (UncertainInitialValue until a signal is measured) nor the timestamps of a restarted endpoint.
    """

    def __init__(self, ns: int) -> None:
        self.ns = ns
        self.items: list[ua.AddNodesItem] = []
        self.initial: dict[ua.NodeId, ua.DataValue] = {}

    def obj(self, sid: str, name: str, parent: ua.NodeId, desc: str = "") -> ua.NodeId:
        nid = ua.NodeId(sid, self.ns)
        attrs = ua.ObjectAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(desc)
        attrs.EventNotifier = 0
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nid
        item.BrowseName = ua.QualifiedName(name, self.ns)
        item.NodeClass = ua.NodeClass.Object
        item.ParentNodeId = parent
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes if parent == _OBJECTS else ua.ObjectIds.HasComponent)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseObjectType)
        item.NodeAttributes = attrs
        self.items.append(item)
        return nid

    def var(self, sid: str, name: str, parent: ua.NodeId, dv: ua.DataValue, datatype: int, desc: str = "",
            writable: bool = False, prop: bool = False, typedef: int = ua.ObjectIds.BaseDataVariableType,
            bname_ns: int | None = None) -> ua.NodeId:
        nid = ua.NodeId(sid, self.ns)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(desc)
        attrs.Value = dv.Value
        self.initial[nid] = dv
        attrs.DataType = ua.NodeId(datatype)
        attrs.ValueRank = -1
        level = ua.AccessLevel.CurrentRead.mask | (ua.AccessLevel.CurrentWrite.mask if writable else 0)
        attrs.AccessLevel = level
        attrs.UserAccessLevel = level
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nid
        item.BrowseName = ua.QualifiedName(name, self.ns if bname_ns is None else bname_ns)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasProperty if prop else ua.ObjectIds.HasComponent)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.PropertyType if prop else typedef)
        item.NodeAttributes = attrs
        self.items.append(item)
        return nid

    async def add_to(self, server: Server):
        """Create every collected node on ``server``, set the initial values; return its address space."""
        results = await server.iserver.isession.add_nodes(self.items)
        bad = [(it.RequestedNewNodeId, r.StatusCode) for it, r in zip(self.items, results)
               if not r.StatusCode.is_good()]
        if bad:
            raise RuntimeError(f"could not create {len(bad)} nodes, first: {bad[0]}")
        aspace = server.iserver.aspace
        for nid, dv in self.initial.items():
            aspace._nodes[nid].attributes[ua.AttributeIds.Value].value = dv
        return aspace


def add_simulator_object(nodes: NodeBatch, *, scenario: str, speed: float, paused: bool, values_published: int,
                         values_written: int, lines: int, seed: int) -> tuple[ua.NodeId, dict[str, ua.NodeId]]:
    """The ``Simulator`` control object: (its node id, {control key: variable node id})."""
    sim = nodes.obj(SIMULATOR_FOLDER, SIMULATOR_FOLDER, _OBJECTS, "Simulator control (not part of a real machine)")
    var = nodes.var
    control = {
        "Scenario": var(f"{SIMULATOR_FOLDER}.Scenario", "Scenario", sim,
                        _dv_of(scenario, ua.VariantType.String), ua.ObjectIds.String,
                        "Active scenario; write a scenario name to switch all lines", writable=True),
        "Speed": var(f"{SIMULATOR_FOLDER}.Speed", "Speed", sim, _dv_of(speed, ua.VariantType.Double),
                     ua.ObjectIds.Double, "Simulated seconds per wall second (0 = flat out)", writable=True),
        "Paused": var(f"{SIMULATOR_FOLDER}.Paused", "Paused", sim, _dv_of(paused, ua.VariantType.Boolean),
                      ua.ObjectIds.Boolean, "Write True to stop the simulated clock", writable=True),
        "ValuesPublished": var(f"{SIMULATOR_FOLDER}.ValuesPublished", "ValuesPublished", sim,
                               _dv_of(values_published, ua.VariantType.UInt64), ua.ObjectIds.UInt64,
                               "Value changes written so far (what a StatusValue subscriber receives)"),
        "ValuesWritten": var(f"{SIMULATOR_FOLDER}.ValuesWritten", "ValuesWritten", sim,
                             _dv_of(values_written, ua.VariantType.UInt64), ua.ObjectIds.UInt64,
                             "Values written so far"),
        "Lines": var(f"{SIMULATOR_FOLDER}.Lines", "Lines", sim, _dv_of(lines, ua.VariantType.Int32),
                     ua.ObjectIds.Int32, "Number of lines"),
        "Seed": var(f"{SIMULATOR_FOLDER}.Seed", "Seed", sim, _dv_of(seed, ua.VariantType.Int64),
                    ua.ObjectIds.Int64, "Random seed"),
    }
    return sim, control


@dataclass
class LineNodes:
    """Node ids of one line that the server hooks or writes to."""

    scenario: ua.NodeId  # the per-line scenario override
    gate: list[tuple[str, ua.NodeId]] = field(default_factory=list)  # (QualityGate variable name, node id)
    signals: list[ua.NodeId] = field(default_factory=list)  # one per SIGNALS entry, same order


def add_line(nodes: NodeBatch, index: int, lid: str, *, seed: int, scenario_override: str,
             last_values: list[ua.DataValue | None]) -> LineNodes:
    """One line's object and everything under it; ``last_values`` (one per signal, None if never
    written) lets a restarted endpoint come back with the values it had."""
    line = nodes.obj(lid, lid, _OBJECTS, f"Injection moulding machine {lid} (OPC 40077 spirit)")
    _add_identification(nodes, index, lid, line, seed)
    scenario = nodes.var(f"{lid}.Scenario", "Scenario", line, _dv_of(scenario_override, ua.VariantType.String),
                         ua.ObjectIds.String, "Per-line scenario override; '' follows Simulator.Scenario",
                         writable=True)
    result = LineNodes(scenario, gate=_add_quality_gate(nodes, lid, line))
    folders = {name: nodes.obj(f"{lid}.{name}", name, line, desc) for name, desc in FOLDERS}
    for s, last_dv in zip(SIGNALS, last_values):
        result.signals.append(_add_signal(nodes, lid, s, folders[s.folder], last_dv))
    return result


async def add_signal_node(server: Server, ns: int, lid: str, s: SignalSpec,
                          last_dv: ua.DataValue | None) -> ua.NodeId:
    """One signal variable (with its properties) added to a running server's line, e.g. a deleted one
    coming back (a source change undone); returns its node id."""
    nodes = NodeBatch(ns)
    nid = _add_signal(nodes, lid, s, ua.NodeId(f"{lid}.{s.folder}", ns), last_dv)
    await nodes.add_to(server)
    return nid


def _add_identification(nodes: NodeBatch, index: int, lid: str, line: ua.NodeId, seed: int) -> None:
    ident = nodes.obj(f"{lid}.Identification", "Identification", line, "Machine identification")
    for pname, pval in (("Manufacturer", "pq simulator"), ("Model", "IMM-sim 1100"),
                        ("SerialNumber", f"SIM-{seed}-{index + 1:03d}"),
                        ("ProductInstanceUri", f"{APPLICATION_URI}:{lid}")):
        nodes.var(f"{lid}.Identification.{pname}", pname, ident, _dv_of(pval, ua.VariantType.String),
                  ua.ObjectIds.String, prop=True)


def _add_quality_gate(nodes: NodeBatch, lid: str, line: ua.NodeId) -> list[tuple[str, ua.NodeId]]:
    gate = nodes.obj(f"{lid}.{GATE_FOLDER}", GATE_FOLDER, line,
                     "Quality gate: a quality system writes here to divert (quarantine) a part")
    return [(gname, nodes.var(f"{lid}.{GATE_FOLDER}.{gname}", gname, gate, _dv_of(gvalue, gvtype), gdtype, gdesc,
                              writable=True))
            for gname, gvalue, gvtype, gdtype, gdesc in GATE_VARIABLES]


def _add_signal(nodes: NodeBatch, lid: str, s: SignalSpec, folder: ua.NodeId,
                last_dv: ua.DataValue | None) -> ua.NodeId:
    """A signal variable (AnalogItemType when it has limits) with its unit and range properties."""
    dv = last_dv or ua.DataValue(ua.Variant(_INITIAL[s.dtype], VTYPE[s.dtype]),
                                 StatusCode=ua.StatusCode(ua.StatusCodes.UncertainInitialValue))
    analog = s.dtype == "double" and s.low is not None
    nid = nodes.var(s.node_id_string(lid), s.name, folder, dv, _DATATYPE[s.dtype],
                    f"{s.description} [{s.unit}]" if s.unit else s.description,
                    typedef=ua.ObjectIds.AnalogItemType if analog else ua.ObjectIds.BaseDataVariableType)
    if s.unit:
        eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                              UnitId=_unece_id(s.unece), DisplayName=ua.LocalizedText(s.unit),
                              Description=ua.LocalizedText(s.unit))
        nodes.var(f"{s.node_id_string(lid)}.EngineeringUnits", "EngineeringUnits", nid,
                  _dv_of(eu, ua.VariantType.ExtensionObject), ua.ObjectIds.EUInformation, prop=True, bname_ns=0)
    if s.low is not None:
        rng = ua.Range(Low=float(s.low), High=float(s.high))
        nodes.var(f"{s.node_id_string(lid)}.EURange", "EURange", nid,
                  _dv_of(rng, ua.VariantType.ExtensionObject), ua.ObjectIds.Range, prop=True, bname_ns=0)
    return nid
