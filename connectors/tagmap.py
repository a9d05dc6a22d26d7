"""Tag maps: one TOML file per OPC UA connection, parsed and validated with file:line:key errors.

Owns :class:`TagMap` and its parts, :func:`load_tagmap`, :func:`parse_tagmap` and
:func:`dump_tagmap` (used by ``pq connect browse`` to write a starter map). The format is
documented in ``docs/tag-maps.md``. Imports pq only (errors, catalogue roles).

Credentials are never in the file: ``security.username_env``/``password_env`` name environment
variables that the entry point resolves (:func:`resolve_credentials`).

Example::

    tm = load_tagmap("connectors/tagmaps/simulator.toml")
    tm.connection.endpoint, [t.name for t in tm.tags][:3]

Why one file of ~420 lines: the dataclasses of a tag map and their validation are read together;
every error names file, line and key through one parser.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from pq.errors import ConfigError
from pq.storage.schema import TAG_ROLES

__all__ = ["TagMap", "ConnectionSpec", "SecuritySpec", "TagSpec", "PartEventSpec", "InspectionSpec",
           "load_tagmap", "parse_tagmap", "dump_tagmap", "resolve_credentials", "SECURITY_POLICIES",
           "SECURITY_MODES", "TAG_MODES", "SIMULATOR_TAGMAP"]

# The shipped tag map of pq's line simulator (line-1 on 127.0.0.1:4840): the default of `pq edge run`.
SIMULATOR_TAGMAP = Path(__file__).resolve().parent / "tagmaps" / "simulator.toml"

SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")
TAG_MODES = ("subscribe", "poll")
DEADBAND_TYPES = ("none", "absolute", "percent")
# OPC UA built-in scalar types a tag's `data_type` may name (what the server's DataType attribute says)
DATA_TYPES = ("Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float",
              "Double", "String", "DateTime", "ByteString", "LocalizedText")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class SecuritySpec:
    policy: str = "None"
    mode: str = "None"
    certificate: str | None = None  # client certificate (DER or PEM); default PQ_PKI_DIR/client_cert.der
    private_key: str | None = None  # client key (PEM); default PQ_PKI_DIR/client_key.pem
    trust_list: str | None = None  # directory of trusted server certificates; default PQ_PKI_DIR/trusted
    trust_unknown_server: bool = False  # accept (and remember) a server certificate not in the trust list
    username_env: str | None = None  # name of the environment variable holding the user name
    password_env: str | None = None  # name of the environment variable holding the password


@dataclass(frozen=True)
class ConnectionSpec:
    name: str
    endpoint: str
    line_id: str
    line_name: str | None = None
    station: str | None = None
    publishing_interval_ms: float = 100.0
    keepalive_s: float = 1.0  # server sends a keep-alive at least this often; silence beyond ~1.5x is a dead subscription
    session_timeout_s: float = 60.0
    security: SecuritySpec = field(default_factory=SecuritySpec)


@dataclass(frozen=True)
class TagSpec:
    node_id: str
    name: str
    line_id: str
    role: str = "process"
    unit: str | None = None
    mode: str = "subscribe"
    sampling_interval_ms: float = 0.0  # 0 = the server's fastest (exception-based on most servers)
    deadband: float = 0.0
    deadband_type: str = "none"
    queue_size: int = 100  # server-side monitored item queue: values between two publishes
    poll_interval_ms: float = 1000.0
    low_limit: float | None = None
    high_limit: float | None = None
    description: str | None = None
    data_type: str | None = None  # expected OPC UA DataType (e.g. "Double"); None: as first seen on the server
    eu_range: tuple[float, float] | None = None  # expected EURange (low, high); None: as first seen
    source_line: int | None = None  # where it is declared, for messages

    @property
    def key(self) -> tuple[str, str]:
        return (self.line_id, self.name)


@dataclass(frozen=True)
class PartEventSpec:
    """Which tags of a line form a part (cycle-complete) event; values are tag names."""

    line_id: str
    serial: str
    end: str | None = None
    start: str | None = None
    trigger: str | None = None  # defaults to serial: a new serial value = a new part
    product: str | None = None
    material_lot: str | None = None
    shift: str | None = None
    context: tuple[str, ...] = ()


@dataclass(frozen=True)
class InspectionSpec:
    line_id: str
    serial: str
    result: str
    ok_values: tuple[str, ...] = ("OK",)
    defect_code: str | None = None
    trigger: str | None = None


@dataclass(frozen=True)
class TagMap:
    path: str
    connection: ConnectionSpec
    tags: tuple[TagSpec, ...]
    part_events: tuple[PartEventSpec, ...] = ()
    inspections: tuple[InspectionSpec, ...] = ()

    @property
    def lines(self) -> list[str]:
        return sorted({t.line_id for t in self.tags})

    def tag(self, line_id: str, name: str) -> TagSpec | None:
        for t in self.tags:
            if t.line_id == line_id and t.name == name:
                return t
        return None


# -- locating keys in the source text ------------------------------------------------------------------

class _Locator:
    """Line numbers of tables and keys: ('tags', 3, 'role') -> 57 (1-based)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]+\")\s*=")

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        counters: dict[str, int] = {}
        table: tuple = ("",)
        for no, line in enumerate(text.splitlines(), 1):
            m = self._HEADER.match(line)
            if m:
                name = m.group(2).replace('"', "")
                if m.group(1) == "[[":
                    counters[name] = counters.get(name, -1) + 1
                    table = (name, counters[name])
                else:
                    parts = name.split(".")
                    # [tags.x] style subtables of the latest array element are rare; keep it simple
                    table = (name, None) if parts[0] not in counters else (name, counters[parts[0]])
                self.lines.setdefault(table, no)
                continue
            k = self._KEY.match(line)
            if k:
                self.lines.setdefault(table + (k.group(1).strip('"'),), no)

    def line(self, table: str, index: int | None = None, key: str | None = None) -> int | None:
        if key is not None and (table, index, key) in self.lines:
            return self.lines[(table, index, key)]
        if table == "" and key is not None:
            return self.lines.get(("", key))
        return self.lines.get((table, index))


class _Ctx:
    def __init__(self, path: str, loc: _Locator):
        self.path, self.loc = path, loc

    def fail(self, table: str, index: int | None, key: str | None, msg: str) -> ConfigError:
        line = self.loc.line(table, index, key)
        where = f"{self.path}:{line}" if line else self.path
        what = f"[{table}]" if index is None else f"[[{table}]] #{index + 1}"
        if key:
            what += f" key {key!r}"
        return ConfigError(f"tag map {where}: {what}: {msg}")


def _check_keys(ctx: _Ctx, table: str, index: int | None, data: Mapping, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise ctx.fail(table, index, key, f"unknown key, expected one of: {', '.join(sorted(allowed))}")


def _get(ctx, table, index, data, key, types, default=None, *, required=False, check=None, expected=None):
    if key not in data:
        if required:
            raise ctx.fail(table, index, None, f"missing key {key!r} ({expected or 'required'})")
        return default
    value = data[key]
    if types is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, types) or isinstance(value, bool) and types is not bool:
        tname = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise ctx.fail(table, index, key, f"got {value!r}, expected {expected or 'a ' + tname}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ctx.fail(table, index, key, f"got {value!r}, expected a finite number")
    if check is not None and not check(value):
        raise ctx.fail(table, index, key, f"got {value!r}, expected {expected}")
    return value


# -- parsing -----------------------------------------------------------------------------------------

def load_tagmap(path: str | Path) -> TagMap:
    """Read and validate a tag map file (ConfigError naming file, line and key)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"tag map {p}: cannot read ({exc.strerror or exc})") from None
    return parse_tagmap(text, str(p))


def parse_tagmap(text: str, path: str = "<tagmap>") -> TagMap:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(f"tag map {path}{':' + m.group(1) if m else ''}: not valid TOML: {exc}") from None
    ctx = _Ctx(path, _Locator(text))
    _check_keys(ctx, "", None, data, {"connection", "defaults", "tags", "part_event", "inspection"})
    conn = _parse_connection(ctx, data.get("connection"))
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ctx.fail("defaults", None, None, "expected a table")
    tag_keys = {f.name for f in fields(TagSpec)} - {"source_line", "line_id"} | {"line_id"}
    _check_keys(ctx, "defaults", None, defaults, tag_keys - {"node_id", "name", "description"})
    raw_tags = data.get("tags")
    if not isinstance(raw_tags, list) or not raw_tags:
        raise ctx.fail("", None, None, "no [[tags]]: declare at least one tag (node_id, name)")
    tags, seen = [], {}
    for i, raw in enumerate(raw_tags):
        if not isinstance(raw, dict):
            raise ctx.fail("tags", i, None, "expected a table")
        _check_keys(ctx, "tags", i, raw, tag_keys)
        merged = {**defaults, **raw}
        tag = _parse_tag(ctx, i, merged, conn.line_id)
        if tag.key in seen:
            raise ctx.fail("tags", i, "name", f"{tag.name!r} of line {tag.line_id} is already declared in "
                                              f"[[tags]] #{seen[tag.key] + 1}")
        seen[tag.key] = i
        tags.append(tag)
    names = {t.key for t in tags}
    parts = [_parse_part(ctx, i, raw, conn.line_id, names) for i, raw in _tables(ctx, data, "part_event")]
    insp = [_parse_inspection(ctx, i, raw, conn.line_id, names) for i, raw in _tables(ctx, data, "inspection")]
    return TagMap(path, conn, tuple(tags), tuple(parts), tuple(insp))


def _tables(ctx, data, key):
    value = data.get(key)
    if value is None:
        return []
    if isinstance(value, dict):
        return [(None, value)]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return list(enumerate(value))
    raise ctx.fail(key, None, None, "expected a table [part_event] or tables [[part_event]]")


def _parse_connection(ctx: _Ctx, raw) -> ConnectionSpec:
    if not isinstance(raw, dict):
        raise ctx.fail("connection", None, None, "missing [connection] table with name, endpoint, line_id")
    allowed = {f.name for f in fields(ConnectionSpec)}
    _check_keys(ctx, "connection", None, raw, allowed)
    g = lambda key, types, default=None, **kw: _get(ctx, "connection", None, raw, key, types, default, **kw)  # noqa: E731
    endpoint = g("endpoint", str, required=True, check=lambda v: v.startswith("opc.tcp://"),
                 expected="an opc.tcp://host:port[/path] URL")
    if re.match(r"opc\.tcp://[^/@]*:[^/@]*@", endpoint):
        raise ctx.fail("connection", None, "endpoint", "credentials in the URL are not allowed; use "
                       "security.username_env / password_env")
    sec_raw = raw.get("security", {})
    sec = _parse_security(ctx, sec_raw)
    return ConnectionSpec(
        name=g("name", str, required=True, check=lambda v: bool(_LINE_RE.match(v)),
               expected="letters, digits, '.', '_' or '-'"),
        endpoint=endpoint,
        line_id=g("line_id", str, required=True, check=lambda v: bool(_LINE_RE.match(v)),
                  expected="a line id such as line-1"),
        line_name=g("line_name", str), station=g("station", str),
        publishing_interval_ms=g("publishing_interval_ms", float, 100.0, check=lambda v: 0 < v <= 60000,
                                 expected="0 < ms <= 60000"),
        keepalive_s=g("keepalive_s", float, 1.0, check=lambda v: 0 < v <= 600, expected="0 < s <= 600"),
        session_timeout_s=g("session_timeout_s", float, 60.0, check=lambda v: 5 <= v <= 86400,
                            expected="5 <= s <= 86400"),
        security=sec,
    )


def _parse_security(ctx: _Ctx, raw) -> SecuritySpec:
    table = "connection.security"
    if not isinstance(raw, dict):
        raise ctx.fail(table, None, None, "expected a table")
    allowed = {f.name for f in fields(SecuritySpec)}
    for key in ("username", "password"):
        if key in raw:
            raise ctx.fail(table, None, key, f"never put a {key} in a tag map; name an environment variable "
                                             f"with {key}_env instead")
    _check_keys(ctx, table, None, raw, allowed)
    g = lambda key, types, default=None, **kw: _get(ctx, table, None, raw, key, types, default, **kw)  # noqa: E731
    policy = g("policy", str, "None", check=lambda v: v in SECURITY_POLICIES,
               expected="one of " + ", ".join(SECURITY_POLICIES))
    mode = g("mode", str, "None" if policy == "None" else "SignAndEncrypt",
             check=lambda v: v in SECURITY_MODES, expected="one of " + ", ".join(SECURITY_MODES))
    if (policy == "None") != (mode == "None"):
        raise ctx.fail(table, None, "mode", f"policy {policy} with mode {mode}: use policy None with mode None, "
                                            "or a real policy with Sign / SignAndEncrypt")
    env = lambda key: g(key, str, check=lambda v: bool(re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v)),  # noqa: E731
                        expected="an environment variable name")
    return SecuritySpec(policy=policy, mode=mode, certificate=g("certificate", str), private_key=g("private_key", str),
                        trust_list=g("trust_list", str), trust_unknown_server=g("trust_unknown_server", bool, False),
                        username_env=env("username_env"), password_env=env("password_env"))


def _parse_tag(ctx: _Ctx, i: int, raw: dict, default_line: str) -> TagSpec:
    g = lambda key, types, default=None, **kw: _get(ctx, "tags", i, raw, key, types, default, **kw)  # noqa: E731
    node_id = g("node_id", str, required=True, check=_valid_node_id,
                expected="a node id such as ns=2;s=Line1.Temp, i=2258 or nsu=urn:x;s=Temp")
    name = g("name", str, required=True, check=lambda v: bool(_NAME_RE.match(v)),
             expected="snake_case ending in its unit, e.g. melt_temp_c")
    mode = g("mode", str, "subscribe", check=lambda v: v in TAG_MODES, expected="subscribe or poll")
    deadband = g("deadband", float, 0.0, check=lambda v: v >= 0, expected="a number >= 0")
    dtype = g("deadband_type", str, "absolute" if deadband > 0 else "none", check=lambda v: v in DEADBAND_TYPES,
              expected="none, absolute or percent")
    low, high = g("low_limit", float), g("high_limit", float)
    if low is not None and high is not None and low > high:
        raise ctx.fail("tags", i, "low_limit", f"low_limit {low} is above high_limit {high}")
    return TagSpec(
        node_id=node_id, name=name,
        line_id=g("line_id", str, default_line, check=lambda v: bool(_LINE_RE.match(v)), expected="a line id"),
        role=g("role", str, "process", check=lambda v: v in TAG_ROLES, expected="one of " + ", ".join(TAG_ROLES)),
        unit=g("unit", str), mode=mode,
        sampling_interval_ms=g("sampling_interval_ms", float, 0.0, check=lambda v: v >= 0, expected="ms >= 0"),
        deadband=deadband, deadband_type=dtype,
        queue_size=g("queue_size", int, 100, check=lambda v: 1 <= v <= 100000, expected="1..100000"),
        poll_interval_ms=g("poll_interval_ms", float, 1000.0, check=lambda v: v >= 10, expected="ms >= 10"),
        low_limit=low, high_limit=high, description=g("description", str),
        data_type=g("data_type", str, check=lambda v: v in DATA_TYPES, expected="one of " + ", ".join(DATA_TYPES)),
        eu_range=_eu_range(ctx, i, raw), source_line=ctx.loc.line("tags", i),
    )


def _eu_range(ctx: _Ctx, i: int, raw: dict) -> tuple[float, float] | None:
    """``eu_range = [low, high]``: what the server's EURange property must say (a change pauses scores)."""
    value = _get(ctx, "tags", i, raw, "eu_range", list, expected="[low, high]")
    if value is None:
        return None
    if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in value) or value[0] >= value[1]:
        raise ctx.fail("tags", i, "eu_range", f"got {value!r}, expected [low, high] with two numbers, low < high")
    return (float(value[0]), float(value[1]))


def _valid_node_id(value: str) -> bool:
    from asyncua import ua

    try:
        ua.NodeId.from_string(value)
    except (ValueError, ua.UaError, IndexError, KeyError):
        return False
    return True


def _ref(ctx, table, i, raw, key, line_id, names, *, required=False):
    value = _get(ctx, table, i, raw, key, str, required=required, expected="a tag name declared in [[tags]]")
    if value is not None and (line_id, value) not in names:
        raise ctx.fail(table, i, key, f"tag {value!r} of line {line_id} is not declared in [[tags]]")
    return value


def _parse_part(ctx: _Ctx, i, raw: dict, default_line: str, names) -> PartEventSpec:
    allowed = {f.name for f in fields(PartEventSpec)}
    _check_keys(ctx, "part_event", i, raw, allowed)
    line_id = _get(ctx, "part_event", i, raw, "line_id", str, default_line)
    r = lambda key, **kw: _ref(ctx, "part_event", i, raw, key, line_id, names, **kw)  # noqa: E731
    ctx_tags = _get(ctx, "part_event", i, raw, "context", list, [], expected="a list of tag names")
    for name in ctx_tags:
        if not isinstance(name, str) or (line_id, name) not in names:
            raise ctx.fail("part_event", i, "context", f"tag {name!r} of line {line_id} is not declared in [[tags]]")
    return PartEventSpec(line_id=line_id, serial=r("serial", required=True), end=r("end"), start=r("start"),
                         trigger=r("trigger"), product=r("product"), material_lot=r("material_lot"),
                         shift=r("shift"), context=tuple(ctx_tags))


def _parse_inspection(ctx: _Ctx, i, raw: dict, default_line: str, names) -> InspectionSpec:
    allowed = {f.name for f in fields(InspectionSpec)} | {"ok_value"}
    _check_keys(ctx, "inspection", i, raw, allowed)
    line_id = _get(ctx, "inspection", i, raw, "line_id", str, default_line)
    r = lambda key, **kw: _ref(ctx, "inspection", i, raw, key, line_id, names, **kw)  # noqa: E731
    ok = raw.get("ok_values", raw.get("ok_value", "OK"))
    ok_values = (ok,) if isinstance(ok, (str, int, bool)) else tuple(ok) if isinstance(ok, list) else None
    if not ok_values:
        raise ctx.fail("inspection", i, "ok_value", f"got {ok!r}, expected a value or list of values meaning OK")
    return InspectionSpec(line_id=line_id, serial=r("serial", required=True), result=r("result", required=True),
                          ok_values=tuple(str(v) for v in ok_values), defect_code=r("defect_code"),
                          trigger=r("trigger"))


def resolve_credentials(tm: TagMap, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(user, password) from the environment variables the map names; ConfigError when one is unset."""
    sec = tm.connection.security
    out = []
    for key in ("username_env", "password_env"):
        var = getattr(sec, key)
        if var is None:
            out.append(None)
        elif var not in environ:
            raise ConfigError(f"tag map {tm.path}: security.{key} names {var}, which is not set in the environment")
        else:
            out.append(environ[var])
    return out[0], out[1]


# -- writing (browse output) -----------------------------------------------------------------------------

def dump_tagmap(connection: dict[str, Any], tags: list[dict[str, Any]], part_events: list[dict] = (),
                inspections: list[dict] = (), header: str = "") -> str:
    """A tag map as TOML text (comments in ``header``)."""
    import tomli_w

    doc: dict[str, Any] = {"connection": connection, "tags": tags}
    if part_events:
        doc["part_event"] = list(part_events)
    if inspections:
        doc["inspection"] = list(inspections)
    return header + tomli_w.dumps(doc)
