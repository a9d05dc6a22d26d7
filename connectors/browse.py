"""``pq connect browse URL``: walk a server's address space and write a starter tag map.

Owns :func:`browse_server` (variables under Objects, with data type, engineering unit and
description) and :func:`starter_tagmap` (the TOML text). Node ids are written in the portable
``nsu=<namespace URI>;...`` form, so the map survives a server that renumbers its namespaces. The
server's own diagnostics (namespace 0) are skipped. Names become snake_case; an integrator then
adds units to names, roles, and the part/inspection blocks (suggested when names look like them).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from asyncua import Client, ua

from pq.errors import ConnectorError

from connectors.tagmap import dump_tagmap, parse_tagmap

__all__ = ["BrowsedVariable", "browse_server", "starter_tagmap", "snake_name"]

logger = logging.getLogger(__name__)

_NUMERIC_TYPES = {ua.ObjectIds.Double, ua.ObjectIds.Float, ua.ObjectIds.Int16, ua.ObjectIds.Int32, ua.ObjectIds.Int64,
                  ua.ObjectIds.UInt16, ua.ObjectIds.UInt32, ua.ObjectIds.UInt64, ua.ObjectIds.Byte, ua.ObjectIds.SByte,
                  ua.ObjectIds.Boolean}


@dataclass
class BrowsedVariable:
    node_id: str  # nsu= form
    path: tuple[str, ...]  # browse names from Objects (exclusive) down to the variable
    data_type: str
    numeric: bool
    unit: str | None
    description: str | None


def snake_name(text: str) -> str:
    """'MeltTemp °C' -> 'melt_temp_c'; always a valid pq tag name."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    s = s.replace("°", "").replace("%", "pct")
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower()
    if not s or not s[0].isalpha():
        s = "t_" + s
    return s


async def browse_server(url: str, *, max_nodes: int = 5000, max_depth: int = 10,
                        timeout_s: float = 4.0, client: Client | None = None) -> list[BrowsedVariable]:
    """Variables of the server (security None unless ``client`` is configured by the caller)."""
    own = client is None
    client = client or Client(url, timeout=timeout_s)
    try:
        if own:
            await client.connect()
        ns_array = await client.get_namespace_array()
        found: list[BrowsedVariable] = []
        seen: set = set()
        queue: list[tuple[object, tuple[str, ...], int]] = [(client.nodes.objects, (), 0)]
        visited = 0
        while queue and visited < max_nodes:
            node, path, depth = queue.pop(0)
            refs = await node.get_children_descriptions()
            for ref in refs:
                nid = ref.NodeId
                if nid.NamespaceIndex == 0 or nid in seen:  # the server's own diagnostics and types
                    continue
                seen.add(nid)
                visited += 1
                name = ref.BrowseName.Name
                if ref.NodeClass == ua.NodeClass.Variable:
                    found.append(await _describe(client, nid, path + (name,), ns_array))
                elif ref.NodeClass == ua.NodeClass.Object and depth < max_depth:
                    queue.append((client.get_node(nid), path + (name,), depth + 1))
        if visited >= max_nodes:
            logger.warning("browse %s stopped after %d nodes (--max-nodes)", url, max_nodes)
        return found
    except (OSError, TimeoutError, ua.UaError, ConnectionError) as exc:
        raise ConnectorError(f"browse {url}: {exc or type(exc).__name__}") from None
    finally:
        if own:
            try:
                await client.disconnect()
            except (OSError, ua.UaError, ConnectionError) as exc:
                logger.debug("browse disconnect: %s", exc)


async def _describe(client: Client, nid: ua.NodeId, path, ns_array) -> BrowsedVariable:
    node = client.get_node(nid)
    dtype_dv, desc_dv = await node.read_attributes([ua.AttributeIds.DataType, ua.AttributeIds.Description])
    dtype = dtype_dv.Value.Value if dtype_dv.Value is not None else None
    numeric = isinstance(dtype, ua.NodeId) and dtype.NamespaceIndex == 0 and dtype.Identifier in _NUMERIC_TYPES
    dtype_name = ua.ObjectIdNames.get(dtype.Identifier, str(dtype)) if isinstance(dtype, ua.NodeId) and \
        dtype.NamespaceIndex == 0 else str(dtype)
    desc = desc_dv.Value.Value.Text if desc_dv.Value is not None and desc_dv.Value.Value is not None else None
    unit = None
    try:
        for prop in await node.get_properties():
            if (await prop.read_browse_name()).Name == "EngineeringUnits":
                eu = await prop.read_value()
                unit = eu.DisplayName.Text if eu is not None and eu.DisplayName is not None else None
    except ua.UaError as exc:
        logger.debug("%s: no engineering units (%s)", nid.to_string(), exc)
    uri = ns_array[nid.NamespaceIndex] if nid.NamespaceIndex < len(ns_array) else None
    ident = nid.to_string().split(";", 1)[-1] if ";" in nid.to_string() else nid.to_string()
    portable = f"nsu={uri};{ident}" if uri else nid.to_string()
    return BrowsedVariable(portable, tuple(path), dtype_name, numeric, unit or None, desc or None)


def starter_tagmap(url: str, variables: list[BrowsedVariable], *, name: str = "plant", line_id: str = "line-1",
                   lines_from: int | None = None) -> str:
    """TOML text of a working starter map. ``lines_from=k``: the k-th browse name (0-based) is the line id."""
    tags, used = [], set()
    for v in variables:
        line = v.path[lines_from] if lines_from is not None and len(v.path) > lines_from else line_id
        line = re.sub(r"[^A-Za-z0-9_.\-]", "-", line)
        base = snake_name(v.path[-1])
        tag_name, k = base, 2
        while (line, tag_name) in used:
            tag_name, k = f"{base}_{k}", k + 1
        used.add((line, tag_name))
        entry = {"node_id": v.node_id, "name": tag_name}
        if line != line_id:
            entry["line_id"] = line
        entry["role"] = "process" if v.numeric else "context"
        if v.unit:
            entry["unit"] = v.unit
        if v.description:
            entry["description"] = v.description[:200]
        tags.append(entry)
    part_events, inspections = _suggest_events(tags, line_id)
    header = (f"# Starter tag map written by `pq connect browse {url}`.\n"
              f"# {len(tags)} variables. Review before use: names should end in their unit (melt_temp_c),\n"
              "# roles are process | context | part_event | label, drop what you do not need.\n"
              "# Part and inspection blocks are suggested only where names looked like serials/results.\n"
              "# Security: set [connection.security] policy/mode and run `pq connect cert`; see docs/tag-maps.md.\n\n")
    conn = {"name": re.sub(r"[^A-Za-z0-9_.\-]", "-", name), "endpoint": url, "line_id": line_id,
            "publishing_interval_ms": 100,
            "security": {"policy": "None", "mode": "None"}}
    text = dump_tagmap(conn, tags, part_events, inspections, header)
    parse_tagmap(text, "<browse output>")  # what we write must load
    return text


def _suggest_events(tags: list[dict], default_line: str) -> tuple[list[dict], list[dict]]:
    by_line: dict[str, dict[str, dict]] = {}
    for t in tags:
        by_line.setdefault(t.get("line_id", default_line), {})[t["name"]] = t
    parts, inspections = [], []
    for line, names in by_line.items():
        pick = lambda *pats: next((n for p in pats for n in names if re.search(p, n)), None)  # noqa: E731
        insp_serial = pick(r"^inspection.*serial", r"inspect.*serial")
        part_serial = next((n for n in names if re.search(r"serial", n) and n != insp_serial), None)
        if part_serial:
            ev = {"line_id": line, "serial": part_serial}
            for key, pats in (("start", (r"cycle_start",)), ("end", (r"cycle_end",)), ("product", (r"^product$",)),
                              ("material_lot", (r"material_lot", r"^lot$")), ("shift", (r"^shift$",))):
                n = pick(*pats)
                if n:
                    ev[key] = n
            ev["context"] = [n for n, t in names.items() if t["role"] == "context" and n not in ev.values()
                             and not n.startswith("inspection") and n not in (insp_serial,) and "defect" not in n]
            for n in (part_serial, ev.get("start"), ev.get("end")):
                if n:
                    names[n]["role"] = "part_event"
            parts.append(ev)
        result = pick(r"inspection_result", r"^result$", r"verdict")
        if insp_serial and result:
            ins = {"line_id": line, "serial": insp_serial, "result": result, "ok_value": "OK"}
            code = pick(r"defect_code", r"defect")
            if code:
                ins["defect_code"] = code
            for n in (insp_serial, result, code):
                if n:
                    names[n]["role"] = "label"
            inspections.append(ins)
    return parts, inspections


def write_starter(path: Path, text: str, *, overwrite: bool = False) -> None:
    if path.exists() and not overwrite:
        raise ConnectorError(f"{path} exists; choose another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
