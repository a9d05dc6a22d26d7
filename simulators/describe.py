"""The ``pq simulate describe`` report: address space, signals, scenarios and defect mechanisms.

Owns only text rendering from the tables in :mod:`simulators.signals`, :mod:`simulators.scenarios`
and :mod:`simulators.line_model`. Imports nothing of pq.
"""

from __future__ import annotations

import textwrap

from .line_model import MECHANISM_DOC, PRODUCTS, SUPPLIERS
from .scenarios import SCENARIOS
from .signals import FOLDERS, NAMESPACE_URI, SIGNALS, SIMULATOR_FOLDER


def _fmt(x) -> str:
    return "" if x is None else f"{x:g}"


def describe_text(lines: int = 1) -> str:
    """The report as text. ``lines`` only changes the list of line objects shown."""
    out: list[str] = []
    w = out.append
    w(f"pq line simulator - namespace {NAMESPACE_URI} (index 2 on a fresh server; resolve it by URI)")
    w("Endpoint: opc.tcp://HOST:PORT/pq/sim/   node ids: ns=2;s=<line>.<Object>.<signal>")
    w("")
    w("Address space")
    w("  Objects/")
    w(f"    {SIMULATOR_FOLDER}/  Scenario (String, writable), Speed (Double, writable), Paused (Boolean, writable),")
    w("               ValuesPublished, ValuesWritten (UInt64), Lines, Seed; methods SetScenario(String), Restart(Double)")
    ids = [f"line-{i + 1}" for i in range(lines)]
    for lid in ids[:1]:
        w(f"    {lid}/  Identification/ (Manufacturer, Model, SerialNumber, ProductInstanceUri), Scenario (writable override)")
        for folder, desc in FOLDERS:
            names = [s for s in SIGNALS if s.folder == folder]
            w(f"      {folder}/  - {desc}")
            for s in names:
                unit = f" [{s.unit}]" if s.unit else ""
                w(f"        {s.name}{unit}  ({s.dtype}, {s.kind})  ns=2;s={s.node_id_string(lid)}")
    if len(ids) > 1:
        w(f"    {', '.join(ids[1:])}/  (same layout)")
    w("  Every signal with a unit has EngineeringUnits (EUInformation, UNECE codes); analog signals are")
    w("  AnalogItemType with EURange = the normal limits below.")
    w("")
    w("Signals")
    w(f"  {'name':<24}{'unit':<9}{'role':<11}{'written':<11}{'low':>8}{'high':>8}  description")
    for s in SIGNALS:
        w(f"  {s.name:<24}{s.unit:<9}{s.role:<11}{s.kind:<11}{_fmt(s.low):>8}{_fmt(s.high):>8}  {s.description}")
    w("")
    w("Write order at the end of every cycle (all with source timestamp = cycle end):")
    w("  per-cycle process values and context -> cycle_start_time, cycle_end_time -> part_serial ->")
    w("  part_counter, cycle_complete -> (label delay later) inspection_result, defect_code -> inspection_serial.")
    w("  A default (StatusValue) subscription does not report a value equal to the previous one (e.g. two OKs in")
    w("  a row, the same lot): keep the last value per tag, or subscribe with a DataChangeFilter whose Trigger")
    w("  is StatusValueTimestamp to receive every write.")
    w("  Continuous samples lie on a regular grid (k / rate) inside (cycle_start, cycle_end); a cycle boundary")
    w("  never falls on a sample (boundaries end in .xxx500 s). Part window: cycle_start < ts <= cycle_end")
    w("  (the previous part's per-cycle values are stamped at this part's cycle_start).")
    w("")
    w("Products (one per line, round robin): " + ", ".join(p.name for p in PRODUCTS))
    w("Suppliers: " + ", ".join(f"{s.name} (MFI {s.mfi_mean:g}±{s.mfi_sd:g} g/10min, moisture "
                                 f"{s.moisture_mean:g}±{s.moisture_sd:g} %)" for s in SUPPLIERS.values()))
    w("")
    w("Environment (moves readings, makes no bad parts)")
    for line in (
        "ambient: 21 °C + season ±2.5 + daily ±3 (peak 15:00 UTC) + weather fronts (periods 1.5-9 days);",
        "  +0.35 °C melt, +0.3 °C barrel, +0.45 °C mould reading per °C above 21; cooling time follows mould temp.",
        "humidity: 48 % + season ±10 + fronts, anti-correlated with the daily temperature swing;",
        "  dryer dew point = -40 + 0.22 (RH - 48) when the dryer is healthy; -0.6 bar injection pressure per %RH.",
        "material lots: a new lot every 250-650 parts; set-points compensate the lot's MFI",
        "  (melt +2.6 °C per g/10min below 22, injection pressure x (22/MFI)^0.65, hold x (22/MFI)^0.3).",
        "tool wear: shots since maintenance, reset every 18k-32k shots; lowers clamp force, raises vibration.",
        "shifts: A 06-14, B 14-22, C 22-06 UTC, each with its own in-spec set-point habits.",
    ):
        w("  " + line)
    w("")
    w("Hidden defect mechanisms (ground truth via Python API / ground_truth.parquet, never OPC UA)")
    w("  p(mechanism) = 0.6 * sigmoid(3 (severity - 2.3)); p(defect) = 1 - prod(1 - p); ~3 % in every")
    w("  environment scenario. Deviations come from slow process wander plus excursions (heater band,")
    w("  pressure overshoot, hold valve, cooling cut short, dryer fault) lasting 6-40 cycles.")
    for name, code, doc in MECHANISM_DOC:
        w(f"  {name} ({code}):")
        for ln in textwrap.wrap(doc, 96):
            w(f"      {ln}")
    w("")
    w("Scenarios (switch live: write Simulator.Scenario, call SetScenario, or `pq simulate set-scenario`)")
    for s in SCENARIOS.values():
        wrapped = textwrap.wrap(s.description, 84)
        w(f"  {s.name:<15}{wrapped[0]}")
        for ln in wrapped[1:]:
            w(f"  {'':<15}{ln}")
    return "\n".join(out)
