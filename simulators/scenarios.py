"""Scenarios: what each one changes, as a table, and scenario schedules for history.

Owns ``SCENARIOS``, ``parse_schedule`` and ``SOURCE_CHANGES`` (changes of the server's address space
under its clients, made by :mod:`simulators.source_schema`). Imports nothing of ``pq``.

A scenario changes conditions (ambient, humidity, supplier), sensors (drift, stuck, status codes) or
the server itself (restart). None of them changes the hidden defect mechanisms: a well-controlled
process makes the same share of bad parts in a heatwave as in spring. ``unstable-process`` changes the
process itself (more frequent excursions), so it makes more bad parts, through the same mechanisms.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    ambient_offset_c: float = 0.0  # added to hall temperature
    ambient_daily_amp_factor: float = 1.0  # scales the daily temperature swing
    humidity_offset_pct: float = 0.0  # added to relative humidity
    supplier: str = "Polymera"  # supplier of new lots (see line_model.SUPPLIERS)
    drift_signal: str | None = None  # reading drifts away from truth (no effect on parts)
    drift_c_per_h: float = 0.0
    drift_max: float = 0.0
    stuck_signal: str | None = None  # reading frozen at its value when the scenario began
    bad_quality: bool = False  # Bad/Uncertain status code episodes on some signals
    server_restart: bool = False  # live server goes away and comes back periodically
    excursion_rate_factor: float = 1.0  # scales how often process excursions start (defect-prone runs)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("normal", "Spring-like conditions, the usual supplier, healthy sensors."),
        Scenario("heatwave", "Dry heat: hall +9 °C with a wider daily swing, RH -10 %. The melt runs hotter "
                 "(more than the barrel zones), the mould warmer, pressure and cushion drop and cooling time "
                 "rises: readings a spring-trained model knows from heater overshoots. The process window moves "
                 "with the hall; defect rate unchanged.", ambient_offset_c=9.0, ambient_daily_amp_factor=1.5,
                 humidity_offset_pct=-10.0),
        Scenario("humid", "Humid season, RH +25 %: the dryer's dew point follows the hall (drying is "
                 "compensated: no more splay); the thinner melt lowers pressure and cushion and lengthens "
                 "injection, readings a spring-trained model knows from a leaking check ring. Defect rate "
                 "unchanged.", humidity_offset_pct=25.0),
        Scenario("new-supplier", "New lots from NovaResin: lower MFI, more moisture. Set-points compensate "
                 "(hotter melt, higher pressures, faster fill, smaller cushion: readings a spring-trained "
                 "model knows from pressure overshoots; drying time set for the supplier); defect rate "
                 "unchanged.", supplier="NovaResin"),
        Scenario("heatwave-new-supplier", "Both at once, as a summer supplier change would bring them: the "
                 "heatwave's dry heat (hall +9 °C, wider daily swing, RH -10 %) with NovaResin lots. Hotter melt "
                 "from both causes, higher pressures from the stiffer lots but lower from the heat: a combination "
                 "no single-condition history shows. Defect rate unchanged.", ambient_offset_c=9.0,
                 ambient_daily_amp_factor=1.5, humidity_offset_pct=-10.0, supplier="NovaResin"),
        Scenario("sensor-drift", "melt_temp_c reading drifts up 3 °C/h (max +15 °C); the real melt and the "
                 "parts are unaffected.", drift_signal="melt_temp_c", drift_c_per_h=3.0, drift_max=15.0),
        Scenario("stuck-sensor", "mould_temp_c reading freezes at its last value (status Good).",
                 stuck_signal="mould_temp_c"),
        Scenario("bad-quality", "Episodes of Bad/Uncertain status codes on vibration, melt temperature, "
                 "screw speed and ambient temperature.", bad_quality=True),
        Scenario("unstable-process", "Process excursions (heater band, check ring, hold valve, chiller, dryer) "
                 "start 4x as often: the same mechanisms make about three times the defects, most of them "
                 "visible in the signals (defect-prone runs for end-to-end tests and demos).",
                 excursion_rate_factor=4.0),
        Scenario("server-restart", "The OPC UA server goes away periodically and comes back on the same "
                 "endpoint; the line keeps producing while it is down.", server_restart=True),
    )
}


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; ValueError naming the valid ones otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}, expected one of: {', '.join(SCENARIOS)}") from None


Schedule = tuple[tuple[float, str], ...]


def parse_schedule(scenario: str | list | tuple) -> Schedule:
    """Normalise a scenario or a schedule into ``((day_offset, name), ...)`` sorted by offset.

    Accepts ``"heatwave"``, ``[(0, "normal"), (7, "heatwave")]`` or the CLI form
    ``"normal,7:heatwave,10:humid"`` (a bare first name starts at day 0).

    >>> parse_schedule("normal,2.5:heatwave")
    ((0.0, 'normal'), (2.5, 'heatwave'))
    """
    if isinstance(scenario, str):
        items: list[tuple[float, str]] = []
        for part in scenario.split(","):
            part = part.strip()
            if not part:
                continue
            if ":" in part:
                day, name = part.split(":", 1)
                try:
                    items.append((float(day), name.strip()))
                except ValueError:
                    raise ValueError(f"bad schedule item {part!r}, expected DAY:SCENARIO") from None
            else:
                items.append((0.0 if not items else items[-1][0], part))
    else:
        items = [(float(d), str(n)) for d, n in scenario]
    if not items:
        raise ValueError("empty scenario schedule")
    for d, n in items:
        get_scenario(n)
        if d < 0:
            raise ValueError(f"schedule day offsets must be >= 0, got {d}")
    items.sort(key=lambda x: x[0])
    if items[0][0] > 0:
        items.insert(0, (0.0, "normal"))
    return tuple(items)


# -- source schema changes (simulators/source_schema.py makes them; `SetSourceSchema`) ----------------------
UNIT_TAG = "melt_temp_c"  # the tag whose unit, data type and range change
REMOVED_TAG = "screw_speed_rpm"
ADDED_TAG = "barrel_zone4_temp_c"
ADDED_FOLDER = "InjectionUnit"
NEW_RANGE = (0.0, 500.0)

SOURCE_CHANGES: dict[str, str] = {
    "unit_fahrenheit": f"{UNIT_TAG}: EngineeringUnits °F instead of °C, EURange and values converted",
    "remove_tag": f"{REMOVED_TAG} deleted from the address space",
    "add_tag": f"new variable {ADDED_TAG} under {ADDED_FOLDER} (not in any tag map)",
    "data_type": f"{UNIT_TAG}: DataType Float instead of Double",
    "eu_range": f"{UNIT_TAG}: EURange {NEW_RANGE[0]:g}..{NEW_RANGE[1]:g} instead of its normal limits",
    "restore": "undo every source change of the line",
}


def check_source_change(name: str) -> str:
    """``name`` if it is a known source change; ValueError naming the valid ones otherwise."""
    if name not in SOURCE_CHANGES:
        raise ValueError(f"unknown source change {name!r}, expected one of: {', '.join(SOURCE_CHANGES)}")
    return name
