"""The simulator's signal table: names, units, roles, node ids and normal limits.

Owns: ``SIGNALS`` (one :class:`SignalSpec` per variable a line publishes), the namespace URI and the
node-id scheme. Imports nothing of ``pq``; the pq side reads node ids through a tag map file, never
through this module.

Node ids are string node ids ``ns=<idx>;s=<line_id>.<folder>.<name>`` in the namespace
:data:`NAMESPACE_URI` (index 2 on a fresh server; clients should resolve the index from the URI).
Example: ``ns=2;s=line-1.InjectionUnit.melt_temp_c``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

NAMESPACE_URI = "urn:pq:simulator"
SIMULATOR_FOLDER = "Simulator"
# A PLC's quality gate per line: variables a quality system writes to divert the part just made.
GATE_FOLDER = "QualityGate"
GATE_NAMES = ("Quarantine", "RiskScore", "RiskSerial")


def gate_node_ids(line_id: str, namespace_index: int = 2) -> dict[str, str]:
    """Node ids of ``line_id``'s quality gate variables {Quarantine, RiskScore, RiskSerial}; the
    simulator's namespace is index 2 on a fresh server."""
    return {name: f"ns={namespace_index};s={line_id}.{GATE_FOLDER}.{name}" for name in GATE_NAMES}

# when a signal is written
CONTINUOUS = "continuous"  # sampled on a regular grid at the signal's rate (default 10 Hz)
PER_CYCLE = "cycle"  # written once per cycle, at cycle end, before the part event
EVENT = "event"  # part event / inspection, written at cycle end after the per-cycle values


@dataclass(frozen=True)
class SignalSpec:
    """One published variable of a line.

    ``low``/``high`` are the normal operating limits of the reading for the default product in
    normal conditions (for plots and limit features; None for strings and counters).
    """

    name: str
    unit: str
    role: str  # process | context | part | inspection
    kind: str  # continuous | cycle | event
    dtype: str  # double | int | bool | string | datetime
    folder: str  # browse folder under the line object (OPC 40077 spirit)
    low: float | None
    high: float | None
    description: str
    unece: str | None = None  # UNECE Rec. 20 common code for EUInformation

    def node_id_string(self, line_id: str) -> str:
        """The string identifier of this signal's node on ``line_id`` (without the ns prefix)."""
        return f"{line_id}.{self.folder}.{self.name}"

    def node_id(self, line_id: str, ns: int = 2) -> str:
        """Full node id, e.g. ``ns=2;s=line-1.InjectionUnit.melt_temp_c``."""
        return f"ns={ns};s={self.node_id_string(line_id)}"

    @property
    def numeric(self) -> bool:
        return self.dtype in ("double", "int", "bool")


_S = SignalSpec
SIGNALS: tuple[SignalSpec, ...] = (
    # -- process, continuous -------------------------------------------------------------------
    _S("barrel_zone1_temp_c", "°C", "process", CONTINUOUS, "double", "InjectionUnit", 200, 235,
       "Barrel heating zone 1 (feed) actual temperature", "CEL"),
    _S("barrel_zone2_temp_c", "°C", "process", CONTINUOUS, "double", "InjectionUnit", 208, 243,
       "Barrel heating zone 2 (compression) actual temperature", "CEL"),
    _S("barrel_zone3_temp_c", "°C", "process", CONTINUOUS, "double", "InjectionUnit", 215, 250,
       "Barrel heating zone 3 (metering) actual temperature", "CEL"),
    _S("nozzle_temp_c", "°C", "process", CONTINUOUS, "double", "InjectionUnit", 222, 258,
       "Nozzle heater actual temperature", "CEL"),
    _S("melt_temp_c", "°C", "process", CONTINUOUS, "double", "InjectionUnit", 220, 256,
       "Melt temperature measured at the nozzle", "CEL"),
    _S("injection_pressure_bar", "bar", "process", CONTINUOUS, "double", "InjectionUnit", 0, 1400,
       "Injection (melt) pressure curve over the cycle; peaks during injection", "BAR"),
    _S("hold_pressure_bar", "bar", "process", CONTINUOUS, "double", "InjectionUnit", 0, 750,
       "Holding pressure actual value; non-zero during the holding phase", "BAR"),
    _S("screw_speed_rpm", "rpm", "process", CONTINUOUS, "double", "InjectionUnit", 0, 160,
       "Screw rotational speed; non-zero during plasticising (recovery)", "RPM"),
    _S("mould_temp_c", "°C", "process", CONTINUOUS, "double", "Mould", 50, 72,
       "Mould cavity surface temperature", "CEL"),
    _S("clamp_force_kn", "kN", "process", CONTINUOUS, "double", "Clamping", 0, 1300,
       "Clamping force actual value; non-zero while the mould is locked", "B47"),
    _S("vibration_mm_s", "mm/s", "process", CONTINUOUS, "double", "Machine", 0, 6,
       "Machine frame vibration velocity (RMS)", "C16"),
    # -- process, per-cycle actual values (EUROMAP 77 cycle parameters) --------------------------
    _S("injection_time_s", "s", "process", PER_CYCLE, "double", "InjectionUnit", 0.8, 2.2,
       "Actual injection (filling) time of the cycle", "SEC"),
    _S("cushion_mm", "mm", "process", PER_CYCLE, "double", "InjectionUnit", 2.0, 8.0,
       "Melt cushion: smallest screw position at the end of holding", "MMT"),
    _S("cooling_time_s", "s", "process", PER_CYCLE, "double", "Mould", 5, 18,
       "Actual cooling time of the cycle (compensated for mould temperature)", "SEC"),
    _S("cycle_time_s", "s", "process", PER_CYCLE, "double", "Cycle", 10, 30,
       "Actual total cycle time", "SEC"),
    # -- context, per cycle (the values that apply to the part just made) -----------------------
    _S("ambient_temp_c", "°C", "context", PER_CYCLE, "double", "Environment", 14, 32,
       "Hall ambient temperature (daily cycle, weather fronts)", "CEL"),
    _S("humidity_pct", "%", "context", PER_CYCLE, "double", "Environment", 25, 80,
       "Hall relative humidity (seasons, weather)", "P1"),
    _S("material_lot", "", "context", PER_CYCLE, "string", "Material", None, None,
       "Material lot id of the granulate in the hopper"),
    _S("supplier", "", "context", PER_CYCLE, "string", "Material", None, None,
       "Material supplier of the current lot"),
    _S("lot_moisture_pct", "%", "context", PER_CYCLE, "double", "Material", 0.02, 0.30,
       "Lot moisture as received (lot certificate)", "P1"),
    _S("lot_mfi_g10min", "g/10min", "context", PER_CYCLE, "double", "Material", 12, 28,
       "Lot melt flow index (lot certificate)"),
    _S("dryer_dew_point_c", "°C", "context", PER_CYCLE, "double", "Material", -48, -18,
       "Dry-air dryer dew point (lower is drier)", "CEL"),
    _S("tool_wear_shots", "shots", "context", PER_CYCLE, "int", "Mould", 0, 40000,
       "Shots since the last tool maintenance", "C62"),
    _S("shift", "", "context", PER_CYCLE, "string", "Production", None, None,
       "Shift: A 06-14, B 14-22, C 22-06 (UTC)"),
    _S("product", "", "context", PER_CYCLE, "string", "Production", None, None,
       "Product / recipe being moulded"),
    # -- part event -------------------------------------------------------------------------------
    _S("cycle_start_time", "", "part", EVENT, "datetime", "Cycle", None, None,
       "Start of the cycle that made the part (written before part_serial)"),
    _S("cycle_end_time", "", "part", EVENT, "datetime", "Cycle", None, None,
       "End of the cycle that made the part (written before part_serial)"),
    _S("part_serial", "", "part", EVENT, "string", "Cycle", None, None,
       "Serial of the part just completed, e.g. L1-000123 (written after the context)"),
    _S("part_counter", "parts", "part", EVENT, "int", "Cycle", None, None,
       "Parts made since the server started (increments per cycle)", "C62"),
    _S("cycle_complete", "", "part", EVENT, "bool", "Cycle", None, None,
       "Toggles at every completed cycle"),
    # -- inspection (label, some cycles later) -----------------------------------------------------
    _S("inspection_result", "", "inspection", EVENT, "string", "Inspection", None, None,
       "OK or NOK (written just before inspection_serial)"),
    _S("defect_code", "", "inspection", EVENT, "string", "Inspection", None, None,
       "Defect code of a NOK part (SHORT_SHOT, FLASH, SINK_MARK, SPLAY, CONTAMINATION), '' if OK"),
    _S("inspection_serial", "", "inspection", EVENT, "string", "Inspection", None, None,
       "Serial of the part just inspected, written last (label delay: some cycles after it was made)"),
)

SIGNALS_BY_NAME: dict[str, SignalSpec] = {s.name: s for s in SIGNALS}
CONTINUOUS_SIGNALS: tuple[str, ...] = tuple(s.name for s in SIGNALS if s.kind == CONTINUOUS)
PER_CYCLE_SIGNALS: tuple[str, ...] = tuple(s.name for s in SIGNALS if s.kind == PER_CYCLE)

# Objects in the order they appear under a line, with a short description (OPC 40077 spirit).
FOLDERS: tuple[tuple[str, str], ...] = (
    ("InjectionUnit", "Injection unit: barrel zones, nozzle, melt, pressures, screw"),
    ("Mould", "Mould: cavity temperature, cooling, tool wear"),
    ("Clamping", "Clamping unit"),
    ("Machine", "Machine condition monitoring"),
    ("Cycle", "Cycle parameters and part events"),
    ("Environment", "Hall environment"),
    ("Material", "Material lot and dryer"),
    ("Production", "Production context: shift, product"),
    ("Inspection", "End-of-line inspection station (label delay)"),
)


def line_id(index: int) -> str:
    """``line_id(0) == 'line-1'``."""
    return f"line-{index + 1}"


def serial_prefix(line: str) -> str:
    """``serial_prefix('line-12') == 'L12'``."""
    return "L" + line.rsplit("-", 1)[-1]


def signals_frame(lines: list[str] | None = None, ns: int = 2):
    """The SIGNALS table as a pandas DataFrame (one row per signal, or per line x signal)."""
    import pandas as pd

    rows = []
    for line in lines or [None]:
        for s in SIGNALS:
            row = {"line_id": line} if line else {}
            row.update(asdict(s))
            row.pop("unece")
            row["node_id"] = s.node_id(line or "line-1", ns)
            row["browse_path"] = f"Objects/{line or 'line-1'}/{s.folder}/{s.name}"
            rows.append(row)
    return pd.DataFrame(rows)
