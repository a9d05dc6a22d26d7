"""Source schema changes: the live server's address space changing under a client, as a PLC
reprogrammed or a gateway reconfigured would change it.

Owns :func:`apply_source_change` (the changes by name are ``scenarios.SOURCE_CHANGES``), which changes one
line's nodes on a running asyncua server and announces it with a ``GeneralModelChangeEvent``
(nodes added, deleted, a data type changed) or a ``SemanticChangeEvent`` (a unit or range property
changed) from the Server object, the events an OPC UA client subscribes to for this. What happens
to the values written afterwards (converted to °F, written as Float, not written at all) is the
server's :class:`~simulators.server.SimulatorServer` business: it reads :func:`slot_effect`.
Imports nothing of ``pq``.

Changes (all on ``melt_temp_c`` unless said otherwise):

- ``unit_fahrenheit``: EngineeringUnits becomes °F (UNECE FAH), EURange and values converted;
- ``remove_tag``: ``screw_speed_rpm`` is deleted from the address space;
- ``add_tag``: a new variable ``barrel_zone4_temp_c`` appears in the InjectionUnit object;
- ``data_type``: the DataType becomes Float and values are written as Float;
- ``eu_range``: EURange becomes 0..500 (the values do not change);
- ``restore``: undo every change of the line.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from asyncua import Server, ua

from .scenarios import (ADDED_FOLDER, ADDED_TAG, NEW_RANGE, REMOVED_TAG, SOURCE_CHANGES, UNIT_TAG,
                        check_source_change)

logger = logging.getLogger(__name__)

__all__ = ["apply_source_change", "slot_effect"]


def slot_effect(active: set[str], tag: str) -> tuple[float, float, ua.VariantType | None, bool]:
    """How values of ``tag`` are written while ``active`` changes hold: (scale, offset, variant type
    or None for the signal's own, removed)."""
    scale, offset, vtype = 1.0, 0.0, None
    if tag == UNIT_TAG and "unit_fahrenheit" in active:
        scale, offset = 9.0 / 5.0, 32.0
    if tag == UNIT_TAG and "data_type" in active:
        vtype = ua.VariantType.Float
    return scale, offset, vtype, tag == REMOVED_TAG and "remove_tag" in active


def _eu(unit: str, code: str) -> ua.EUInformation:
    return ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact", UnitId=_unece_id(code),
                            DisplayName=ua.LocalizedText(unit), Description=ua.LocalizedText(unit))


def _unece_id(code: str) -> int:
    v = 0
    for ch in code:
        v = (v << 8) | ord(ch)
    return v


def _f(c: float) -> float:
    return c * 9.0 / 5.0 + 32.0


async def _set(server: Server, nid: ua.NodeId, value, vtype: ua.VariantType) -> None:
    await server.write_attribute_value(nid, ua.DataValue(ua.Variant(value, vtype)))


async def _delete_variable(server: Server, nid: ua.NodeId, source_time: datetime | None) -> None:
    """Delete a variable as a PLC's server would: its monitored items get a last value with status
    Bad_NodeIdUnknown first. (asyncua 2.1's own delete calls the monitored items' coroutine callbacks
    without awaiting them, so they are detached here and the status written before.)"""
    await server.write_attribute_value(nid, ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown),
                                                         SourceTimestamp=source_time or datetime.now(timezone.utc)))
    aspace = server.iserver.aspace
    for handle in list(aspace._nodes[nid].attributes[ua.AttributeIds.Value].datachange_callbacks):
        aspace.delete_datachange_callback(handle)
    await server.delete_nodes([server.get_node(nid)], recursive=True)


async def _announce(server: Server, etype: int, changes: list, message: str) -> None:
    """One model change (or semantic change) event from the Server object."""
    gen = await server.get_event_generator(etype, ua.ObjectIds.Server)
    gen.event.Changes = changes
    # asyncua 2.1 records the structure's DataType NodeId as the field's variant type and fails to
    # encode it: an array of structures travels as ExtensionObjects
    gen.event.data_types["Changes"] = ua.VariantType.ExtensionObject
    gen.event.Severity = 500
    await gen.trigger(message=message)


async def apply_source_change(server: Server, ns: int, line: str, name: str, active: set[str], *,
                              add_signal, announce: bool = True, source_time: datetime | None = None) -> set[str]:
    """Make change ``name`` on ``line`` of a running server (``active``: the changes already made)
    and return the new set of active changes. ``add_signal(name)`` re-creates a deleted signal
    variable (the server knows its layout). ``announce`` False: rebuilding a restarted endpoint's
    address space, no client is there to tell. ``source_time``: the server's clock (simulated time), for
    the last Bad_NodeIdUnknown value of a deleted variable."""
    from .signals import SIGNALS_BY_NAME

    check_source_change(name)
    if name == "restore":
        for change in sorted(active, reverse=True):  # unit_fahrenheit before eu_range: both write EURange
            await _undo(server, ns, line, change, add_signal=add_signal, announce=announce, source_time=source_time)
        return set()
    if name in active:
        return set(active)
    spec = SIGNALS_BY_NAME[UNIT_TAG]
    var = ua.NodeId(spec.node_id_string(line), ns)
    general = []
    semantic = []
    if name == "unit_fahrenheit":
        await _set(server, ua.NodeId(f"{spec.node_id_string(line)}.EngineeringUnits", ns), _eu("°F", "FAH"),
                   ua.VariantType.ExtensionObject)
        lo, hi = ("eu_range" in active and NEW_RANGE) or (spec.low, spec.high)
        await _set(server, ua.NodeId(f"{spec.node_id_string(line)}.EURange", ns),
                   ua.Range(Low=_f(lo), High=_f(hi)), ua.VariantType.ExtensionObject)
        semantic.append(ua.SemanticChangeStructureDataType(Affected=var, AffectedType=ua.NodeId(
            ua.ObjectIds.AnalogItemType)))
    elif name == "eu_range":
        lo, hi = NEW_RANGE
        if "unit_fahrenheit" in active:
            lo, hi = _f(lo), _f(hi)
        await _set(server, ua.NodeId(f"{spec.node_id_string(line)}.EURange", ns), ua.Range(Low=lo, High=hi),
                   ua.VariantType.ExtensionObject)
        semantic.append(ua.SemanticChangeStructureDataType(Affected=var, AffectedType=ua.NodeId(
            ua.ObjectIds.AnalogItemType)))
    elif name == "data_type":
        await server.write_attribute_value(var, ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.Float))),
                                           ua.AttributeIds.DataType)
        general.append(ua.ModelChangeStructureDataType(Affected=var, AffectedType=ua.NodeId(
            ua.ObjectIds.AnalogItemType), Verb=ua.ModelChangeStructureVerbMask.DataTypeChanged))
    elif name == "remove_tag":
        rid = ua.NodeId(SIGNALS_BY_NAME[REMOVED_TAG].node_id_string(line), ns)
        await _delete_variable(server, rid, source_time)
        general.append(ua.ModelChangeStructureDataType(Affected=rid, AffectedType=ua.NodeId(
            ua.ObjectIds.BaseDataVariableType), Verb=ua.ModelChangeStructureVerbMask.NodeDeleted))
    elif name == "add_tag":
        folder = server.get_node(ua.NodeId(f"{line}.{ADDED_FOLDER}", ns))
        nid = ua.NodeId(f"{line}.{ADDED_FOLDER}.{ADDED_TAG}", ns)
        await folder.add_variable(nid, ua.QualifiedName(ADDED_TAG, ns), 0.0, ua.VariantType.Double)
        general.append(ua.ModelChangeStructureDataType(Affected=nid, AffectedType=ua.NodeId(
            ua.ObjectIds.BaseDataVariableType), Verb=ua.ModelChangeStructureVerbMask.NodeAdded))
    if announce:
        await _announce_all(server, line, name, general, semantic)
    logger.info("source change %s on %s: %s", name, line, SOURCE_CHANGES[name])
    return set(active) | {name}


async def _announce_all(server: Server, line: str, name: str, general: list, semantic: list) -> None:
    if general:
        await _announce(server, ua.ObjectIds.GeneralModelChangeEventType, general, f"{line}: {name}")
    if semantic:
        await _announce(server, ua.ObjectIds.SemanticChangeEventType, semantic, f"{line}: {name}")


async def _undo(server: Server, ns: int, line: str, name: str, *, add_signal, announce: bool,
                source_time: datetime | None) -> None:
    from .signals import SIGNALS_BY_NAME

    spec = SIGNALS_BY_NAME[UNIT_TAG]
    var = ua.NodeId(spec.node_id_string(line), ns)
    general, semantic = [], []
    if name in ("unit_fahrenheit", "eu_range"):
        if name == "unit_fahrenheit":
            await _set(server, ua.NodeId(f"{spec.node_id_string(line)}.EngineeringUnits", ns),
                       _eu(spec.unit, spec.unece or ""), ua.VariantType.ExtensionObject)
        await _set(server, ua.NodeId(f"{spec.node_id_string(line)}.EURange", ns),
                   ua.Range(Low=float(spec.low), High=float(spec.high)), ua.VariantType.ExtensionObject)
        semantic.append(ua.SemanticChangeStructureDataType(Affected=var, AffectedType=ua.NodeId(
            ua.ObjectIds.AnalogItemType)))
    elif name == "data_type":
        await server.write_attribute_value(var, ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.Double))),
                                           ua.AttributeIds.DataType)
        general.append(ua.ModelChangeStructureDataType(Affected=var, AffectedType=ua.NodeId(
            ua.ObjectIds.AnalogItemType), Verb=ua.ModelChangeStructureVerbMask.DataTypeChanged))
    elif name == "remove_tag":
        rid = await add_signal(REMOVED_TAG)
        general.append(ua.ModelChangeStructureDataType(Affected=rid, AffectedType=ua.NodeId(
            ua.ObjectIds.BaseDataVariableType), Verb=ua.ModelChangeStructureVerbMask.NodeAdded))
    elif name == "add_tag":
        nid = ua.NodeId(f"{line}.{ADDED_FOLDER}.{ADDED_TAG}", ns)
        await _delete_variable(server, nid, source_time)
        general.append(ua.ModelChangeStructureDataType(Affected=nid, AffectedType=ua.NodeId(
            ua.ObjectIds.BaseDataVariableType), Verb=ua.ModelChangeStructureVerbMask.NodeDeleted))
    if announce:
        await _announce_all(server, line, f"undo {name}", general, semantic)
