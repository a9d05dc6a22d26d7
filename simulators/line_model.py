"""The process model of one injection-moulding line: pure, seeded, deterministic, no asyncio.

Owns the physics-flavoured model behind every value the simulator publishes: environment (hall
temperature and humidity, shared by all lines of a plant), material lots, dryer, tool wear, shifts,
the machine's set-points and latent process deviations, the hidden defect mechanisms and the
inspection station. Both drivers step this same model: the live OPC UA server
(``simulators.server``) paces it against the wall clock, history generation (``simulators.history``)
runs it flat out. Imports nothing of ``pq`` (numpy only).

Time is integer microseconds since the model's ``start``. One call to :meth:`LineModel.next_cycle`
makes one part and returns a :class:`Cycle` with every value to publish and the ground truth.

Example::

    m = LineModel("line-1", seed=7, start=datetime(2025, 6, 1, tzinfo=timezone.utc))
    c = m.next_cycle()
    c.serial, c.truth["defect_prob"], c.cont[0].name

Why one file of ~740 lines: the process model's constants, its state and the steps of a cycle are
one model; each step of ``next_cycle`` is a method of its own, in the order of its random draws.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from .scenarios import Scenario, get_scenario, parse_schedule
from .signals import CONTINUOUS_SIGNALS, serial_prefix

# OPC UA status codes used by the model (values from OPC 10000-6 / asyncua.ua.StatusCodes)
GOOD = 0x00000000
UNCERTAIN_LAST_USABLE = 0x40900000
UNCERTAIN_SENSOR_NOT_ACCURATE = 0x40930000
BAD_COMMUNICATION_ERROR = 0x80050000
BAD_SENSOR_FAILURE = 0x808C0000


def is_bad(status: int) -> bool:
    return (status & 0xC0000000) == 0x80000000


REFERENCE_MFI = 22.0  # g/10min the products' base set-points are written for
US = 1_000_000


@dataclass(frozen=True)
class Supplier:
    name: str
    code: str
    mfi_mean: float
    mfi_sd: float
    moisture_mean: float  # % as received
    moisture_sd: float


SUPPLIERS: dict[str, Supplier] = {
    "Polymera": Supplier("Polymera", "PM", 22.0, 1.8, 0.10, 0.025),
    "NovaResin": Supplier("NovaResin", "NR", 16.0, 1.2, 0.19, 0.035),
}


@dataclass(frozen=True)
class Product:
    name: str
    melt_c: float  # melt set-point at REFERENCE_MFI
    mould_c: float
    inj_bar: float  # peak injection pressure at REFERENCE_MFI
    hold_bar: float
    inj_time_s: float
    hold_time_s: float
    cooling_s: float
    clamp_kn: float
    cushion_mm: float
    screw_rpm: float
    close_s: float
    open_s: float


PRODUCTS: tuple[Product, ...] = (
    Product("HSG-1040", 238.0, 60.0, 1000.0, 560.0, 1.30, 4.0, 9.0, 950.0, 4.5, 110.0, 1.2, 2.2),
    Product("CLP-2210", 232.0, 56.0, 860.0, 480.0, 0.95, 2.6, 6.2, 700.0, 3.6, 130.0, 1.0, 1.8),
    Product("CVR-3300", 244.0, 64.0, 1150.0, 620.0, 1.70, 5.5, 13.0, 1150.0, 5.5, 95.0, 1.4, 2.6),
)

SHIFTS = (("C", 0, 6), ("A", 6, 14), ("B", 14, 22), ("C", 22, 24))
# operator habits per shift: set-point offsets that are within spec and make no bad parts
SHIFT_OFFSETS = {"A": (0.0, 0.0, 0.0), "B": (0.8, 0.5, 4.0), "C": (-0.6, -0.8, -3.0)}  # melt, mould, hold

# latent process deviations, relative to what today's conditions call for: (name, AR(1) sigma)
LATENTS = (
    ("melt", 1.2),  # °C, melt temperature off its (condition-compensated) set-point
    ("inj", 12.0),  # bar, injection pressure control error
    ("hold", 8.0),  # bar, hold pressure valve error
    ("cool", 0.2),  # s, cooling time off what the mould temperature needs
    ("dry", 1.0),  # °C dew point above what the hall humidity explains (dryer)
    ("mould", 0.7),  # °C, mould temperature controller wander (no quality effect)
    ("leak", 0.02),  # share of the shot leaking back past a worn check ring
)
_LAT = {name: i for i, (name, _) in enumerate(LATENTS)}
# excursion episodes: (name, latent, magnitude); each type starts independently, ramps in and out.
# Every latent that makes defects has an excursion in the direction of a defect signature, so that a
# model trained on normal history learns each signature from real defects.
EXCURSIONS = (
    ("heater_band_failure", "melt", -12.0),  # cold melt -> short shot
    ("heater_overshoot", "melt", 11.0),  # hot melt -> flash
    ("pressure_overshoot", "inj", 130.0),  # -> flash
    ("check_ring_leak", "leak", 1.0),  # lower pressure, smaller cushion -> short shot
    ("hold_valve", "hold", -70.0),  # -> sink marks
    ("cooling_cut_short", "cool", -2.0),  # -> sink marks
    ("dryer_regeneration_fault", "dry", 12.0),  # -> splay
)
_EXC_LATENT = tuple(_LAT[lat] for _, lat, _ in EXCURSIONS)
N_EXCURSION_TYPES = len(EXCURSIONS)
EXCURSION_START_P = 0.00028  # per cycle and type
AR_PHI = 0.95

# How conditions move the raw process readings (per unit of the condition's deviation from
# reference: 21 °C hall, 48 %RH, MFI 22 g/10min). These are what a process-only model cannot tell
# from a defect signature: a hot hall reads like a heater overshoot (hotter barrel, nozzle and melt,
# lower pressure, smaller cushion), humid air like a leaking check ring (lower pressure, smaller
# cushion), a low-MFI lot like an overshoot (hotter melt set-point, higher pressures). The process
# window moves with them, so none of them changes the true risk. All are linear in the context
# values a plant records, which is what lets a context baseline take them out again.
ENV_MELT_C_PER_C = 0.5  # the melt runs hotter in a hot hall (less heat lost on its way to the nozzle)
ENV_ZONE_SHARE = 0.3  # barrel and nozzle zones are closed-loop: their readings move less than the melt
ENV_MOULD_C_PER_C = 0.45  # the chiller cannot hold the mould temperature down
ENV_INJ_BAR_PER_C_MELT = 6.0  # hotter, thinner melt needs less pressure to fill at the set speed
ENV_INJ_BAR_PER_PCT_RH = 1.4  # moister melt is thinner: less pressure at the set speed
ENV_CUSHION_MM_PER_C_MELT = 0.08  # thinner melt packs further: smaller cushion
ENV_CUSHION_MM_PER_PCT_RH = 0.02  # ... and more of it slips back past the check ring:
ENV_INJ_TIME_PER_PCT_RH = 0.0012  # longer injection (share of the product's injection time)
COMP_MELT_C_PER_MFI = 2.6  # set-point table: hotter melt for a stiffer (lower MFI) lot
COMP_INJ_PER_MFI = 0.035  # ... and more injection pressure (share of the product's set-point)
COMP_HOLD_PER_MFI = 0.012
COMP_INJ_TIME_PER_MFI = 0.006  # ... and a faster fill (share of the product's injection time)
COMP_CUSHION_MM_PER_MFI = 0.07  # the hotter, harder-pushed stiff melt packs further

MECHANISMS = ("short_shot", "flash", "sink_mark", "splay", "contamination")
DEFECT_CODES = {
    "short_shot": "SHORT_SHOT",
    "flash": "FLASH",
    "sink_mark": "SINK_MARK",
    "splay": "SPLAY",
    "contamination": "CONTAMINATION",
}

MECHANISM_DOC = (
    ("short_shot", "SHORT_SHOT",
     "the cavity does not fill: severity = -d_melt/4 - d_inj/60 + 2.6 leak, where d_melt is the melt "
     "temperature off its set-point for the lot's MFI and the hall, d_inj the pressure control error "
     "and leak the share of the shot lost past a worn check ring. Signature: cold melt and barrel "
     "zone 2 with higher pressure and larger cushion (heater band), or lower pressure with a smaller "
     "cushion and longer injection time (check ring)."),
    ("flash", "FLASH",
     "melt escapes at the parting line: severity = d_inj/45 + d_melt/4.5 + 0.5 (tool_wear_shots/30000)^2. "
     "Signature: high peak pressure, short injection time (pressure overshoot), or hot melt, barrel and "
     "nozzle with lower pressure and a smaller cushion (heater overshoot); worse on a worn tool."),
    ("sink_mark", "SINK_MARK",
     "not enough packing: severity = -d_hold/30 - d_cool/0.8. Signature: low hold pressure and larger "
     "cushion, or cooling time short for the mould temperature."),
    ("splay", "SPLAY",
     "moisture: severity = (dew_point - expected(humidity))/4; expected dew point = -40 + 0.22 (RH - 48); "
     "the dryer's drying time is set per supplier, so only a lot wetter than its supplier's usual "
     "(and a dryer fault) raises the dew point above expected. Signature: dew point high for the humidity."),
    ("contamination", "CONTAMINATION", "random 0.3 % (black specks); not learnable, the floor of any model."),
)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _mech_p(severity: float, pmax: float = 0.85, threshold: float = 2.3, slope: float = 4.0) -> float:
    return pmax * _sigmoid(slope * (severity - threshold))


@dataclass
class ContSamples:
    """Regularly sampled values of one continuous signal within one cycle."""

    name: str
    t_us: np.ndarray  # int64, µs since model start
    values: np.ndarray  # float64 (NaN where the status is Bad)
    status: np.ndarray | None  # uint32 per sample, None means all Good


@dataclass
class Cycle:
    """One machine cycle = one part, with everything the line publishes for it."""

    line_id: str
    index: int  # 1-based part number on this line
    serial: str
    t_start_us: int
    t_end_us: int
    scenario: str
    cont: list[ContSamples]
    # values written at t_end_us, in write order: (name, value, status)
    events: list[tuple[str, object, int]]
    part: dict  # parts-table row (label filled in when inspected)
    truth: dict  # ground truth: mechanism, defect_prob, per-mechanism probabilities
    inspected: dict | None = None  # the part row inspected at the end of this cycle


@dataclass
class _Lot:
    lot_id: str
    supplier: Supplier
    mfi: float
    moisture: float
    remaining: int


@dataclass
class _Weather:
    """Plant-wide hall climate: a deterministic function of absolute time and the seed."""

    periods_s: np.ndarray
    phases: np.ndarray
    amps: np.ndarray
    h_phases: np.ndarray

    @classmethod
    def from_seed(cls, seed: int) -> "_Weather":
        rng = np.random.default_rng([seed, 0xA1])
        periods = rng.uniform(1.5, 9.0, 4) * 86400.0
        amps = np.array([1.6, 1.1, 0.8, 0.5]) * rng.uniform(0.8, 1.2, 4)
        return cls(periods, rng.uniform(0, 2 * np.pi, 4), amps, rng.uniform(0, 2 * np.pi, 4))

    def at(self, epoch_s: float, sc: Scenario, season_day: float | None = None) -> tuple[float, float]:
        """(ambient °C, relative humidity %) without local noise; ``season_day`` (day of the year)
        replaces the clock's day in the seasonal terms only (daily cycle and fronts follow the clock)."""
        doy = season_day if season_day is not None else (epoch_s / 86400.0) % 365.25
        hour = (epoch_s / 3600.0) % 24.0
        season = 21.0 + 2.5 * math.cos(2 * math.pi * (doy - 200.0) / 365.25)
        daily = 3.0 * sc.ambient_daily_amp_factor * math.cos(2 * math.pi * (hour - 15.0) / 24.0)
        w = 2 * math.pi * epoch_s / self.periods_s
        front = float(np.dot(self.amps, np.sin(w + self.phases)))
        ambient = season + daily + front + sc.ambient_offset_c
        h_season = 48.0 + 10.0 * math.cos(2 * math.pi * (doy - 220.0) / 365.25)
        h_front = 4.0 * float(np.dot(self.amps, np.sin(w + self.h_phases)))
        humidity = h_season + h_front - 1.5 * (daily / sc.ambient_daily_amp_factor) + sc.humidity_offset_pct
        return ambient, humidity


@dataclass
class _Context:
    """Conditions of one cycle, at its start."""

    ambient: float
    humidity: float
    noise: float  # the dew point's measurement noise, drawn with the context
    lot: _Lot
    wear: int
    shift: str


@dataclass
class _Process:
    """Set-points and actual process values of one cycle (before sampling noise)."""

    melt_sp: float
    melt_env: float
    melt_real: float
    mould_real: float
    inj_peak: float
    hold_act: float
    inj_time: float
    cool_act: float
    cushion: float
    hum_dev: float
    dp_expected: float
    dew_point: float


@dataclass
class _Phases:
    """Where the phases of one cycle begin and end, in seconds from its start."""

    t_end: int
    cycle_s: float
    inj_s: float
    cool_s: float
    c1: float  # clamp closed, injection starts
    c2: float  # hold starts
    c3: float  # cooling (and screw recovery) starts
    rec_end: float
    c4: float  # mould opens
    cushion_noise: float


class LineModel:
    """Seeded model of one line. Same (seed, line index, start, scenario schedule, rates) -> same data.

    ``scenario`` is a name or a schedule ``[(day_offset, name), ...]`` (see
    :func:`simulators.scenarios.parse_schedule`); :meth:`set_scenario` overrides it live from the
    next cycle on. ``sample_hz`` is the rate of every continuous signal, ``signal_hz`` overrides it
    per signal. ``label_delay`` is the number of cycles between a part's end and its inspection.
    """

    def __init__(
        self,
        line_id: str,
        seed: int = 0,
        start: datetime | None = None,
        sample_hz: float = 10.0,
        scenario: str | list | tuple = "normal",
        label_delay: int = 3,
        signal_hz: dict[str, float] | None = None,
        line_index: int | None = None,
        product: str | None = None,
        first_serial: int = 1,
        season_day: float | None = None,
    ) -> None:
        if sample_hz <= 0:
            raise ValueError(f"sample_hz must be > 0, got {sample_hz}")
        if label_delay < 0:
            raise ValueError(f"label_delay must be >= 0, got {label_delay}")
        if first_serial < 1:
            raise ValueError(f"first_serial must be >= 1, got {first_serial}")
        self.first_serial = int(first_serial)
        self.set_season_day(season_day)
        self.line_id = line_id
        self.line_index = line_index if line_index is not None else int(line_id.rsplit("-", 1)[-1]) - 1
        self.seed = int(seed)
        start = start or datetime.now(timezone.utc).replace(microsecond=0)
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        self.start = start.astimezone(timezone.utc)
        self.start_epoch_us = int(round(self.start.timestamp() * US))
        self.schedule = parse_schedule(scenario)
        self._override: str | None = None
        self.label_delay = int(label_delay)
        self.prefix = serial_prefix(line_id)
        if product is None:
            self.product = PRODUCTS[self.line_index % len(PRODUCTS)]
        else:
            matches = [p for p in PRODUCTS if p.name == product]
            if not matches:
                raise ValueError(f"unknown product {product!r}, expected one of: {', '.join(p.name for p in PRODUCTS)}")
            self.product = matches[0]

        # sampling groups: period_us -> signal names
        rates = dict.fromkeys(CONTINUOUS_SIGNALS, float(sample_hz))
        for name, hz in (signal_hz or {}).items():
            if name not in rates:
                raise ValueError(f"signal_hz: {name!r} is not a continuous signal ({', '.join(CONTINUOUS_SIGNALS)})")
            if hz <= 0:
                raise ValueError(f"signal_hz[{name!r}] must be > 0, got {hz}")
            rates[name] = float(hz)
        self.rates_hz = rates
        groups: dict[int, list[str]] = {}
        for name, hz in rates.items():
            groups.setdefault(max(1, int(round(US / hz))), []).append(name)
        self._groups = sorted(groups.items())

        base = [self.seed, self.line_index]
        self._rng_proc = np.random.default_rng(base + [1])  # latents, excursions, defects: fixed draws/cycle
        self._rng_noise = np.random.default_rng(base + [2])  # sample noise
        self._rng_lot = np.random.default_rng(base + [3])  # lots, maintenance
        self._rng_bad = np.random.default_rng(base + [4])  # status-code episodes
        self._rng_ctx = np.random.default_rng(base + [5])  # context measurement noise
        self._weather = _Weather.from_seed(self.seed)
        self._line_ambient_offset = float(np.random.default_rng(base + [6]).uniform(-0.6, 0.6))

        self.t_us = 500  # start of the next cycle; every boundary is at .xxx500 s, off any ms sample grid
        self.index = self.first_serial - 1  # a PLC's part counter carries on across restarts
        self._lat = np.zeros(len(LATENTS))
        self._exc_left = np.zeros(N_EXCURSION_TYPES, dtype=np.int64)
        self._exc_len = np.zeros(N_EXCURSION_TYPES, dtype=np.int64)
        self._exc_mag = np.zeros(N_EXCURSION_TYPES)
        self._maint_interval = int(self._rng_lot.integers(18000, 32000))
        self.tool_wear = int(self._rng_lot.integers(0, self._maint_interval))
        self._lot: _Lot | None = None
        self._lot_seq = 0
        self._bad_left: dict[str, int] = {}
        self._pending: deque[dict] = deque()
        self._scenario_name = self.schedule[0][1]
        self._scenario_since_us = 0
        self._last_value: dict[str, float] = {}
        self._stuck_value: dict[str, float] = {}

    # -- scenario -----------------------------------------------------------------------------
    def set_scenario(self, name: str | None) -> None:
        """Override the schedule from the next cycle on (None returns to the schedule)."""
        if name is not None:
            get_scenario(name)
        self._override = name

    def set_season_day(self, day: float | None) -> None:
        """Hall climate of day-of-year ``day`` (0-365) from the next cycle on, whatever the clock says;
        None follows the clock. A demo uses it to put a live line into another season at once (a model
        trained in January meeting July), which no scenario's own offsets do."""
        if day is not None and not 0 <= day <= 366:
            raise ValueError(f"season_day must be a day of the year (0-366), got {day}")
        self.season_day = None if day is None else float(day)

    def scenario_at(self, t_us: int) -> str:
        if self._override is not None:
            return self._override
        day = t_us / (86400 * US)
        name = self.schedule[0][1]
        for d, n in self.schedule:
            if d <= day:
                name = n
        return name

    @property
    def scenario(self) -> str:
        return self._scenario_name

    # -- helpers --------------------------------------------------------------------------------
    def datetime_at(self, t_us: int) -> datetime:
        return self.start + timedelta(microseconds=int(t_us))

    def _shift(self, epoch_s: float) -> str:
        hour = (epoch_s / 3600.0) % 24.0
        for name, lo, hi in SHIFTS:
            if lo <= hour < hi:
                return name
        return "C"

    def _new_lot(self, supplier: Supplier, epoch_s: float) -> _Lot:
        r = self._rng_lot
        self._lot_seq += 1
        day = datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%y%m%d")
        mfi = float(np.clip(r.normal(supplier.mfi_mean, supplier.mfi_sd), 8.0, 40.0))
        moisture = float(np.clip(r.normal(supplier.moisture_mean, supplier.moisture_sd), 0.02, 0.6))
        size = int(r.integers(250, 650))
        lot_id = f"{supplier.code}{day}-{self.line_index + 1:02d}{self._lot_seq:04d}"
        return _Lot(lot_id, supplier, round(mfi, 2), round(moisture, 3), size)

    # -- the cycle --------------------------------------------------------------------------------
    def next_cycle(self) -> Cycle:
        """Make the next part: advance time by one cycle and return everything published for it.

        The steps run in a fixed order, each drawing from its own random stream, so a seed always
        gives the same line: context, latent deviations, process values, defect, phases, samples."""
        t0 = self.t_us
        name = self.scenario_at(t0)
        if name != self._scenario_name:
            self._scenario_name = name
            self._scenario_since_us = t0
        sc = get_scenario(name)
        self.index += 1
        ctx = self._context(t0, sc)
        dev, u_defect, u_mech = self._latent_deviations(sc)
        proc = self._process_values(ctx, dev)
        probs, p_defect, defect, mechanism = self._defect(ctx, dev, proc, u_defect, u_mech)
        ph = self._phases(t0, proc)
        bad_status = self._bad_statuses(sc)
        cont = self._continuous(t0, sc, ctx, dev, proc, ph, bad_status)
        return self._publish(t0, name, ctx, proc, ph, bad_status, cont, probs, p_defect, defect, mechanism)

    # -- the steps of a cycle ----------------------------------------------------------------------
    def _context(self, t0: int, sc: Scenario) -> _Context:
        """Conditions at cycle start: weather, material lot, tool wear, shift."""
        epoch_s = (self.start_epoch_us + t0) / US
        amb, hum = self._weather.at(epoch_s, sc, self.season_day)
        cn = self._rng_ctx.standard_normal(4)
        ambient = amb + self._line_ambient_offset + 0.15 * cn[0]
        humidity = float(np.clip(hum + 1.0 * cn[1], 12.0, 98.0))
        supplier = SUPPLIERS[sc.supplier]
        if self._lot is None or self._lot.remaining <= 0 or self._lot.supplier is not supplier:
            self._lot = self._new_lot(supplier, epoch_s)
        lot = self._lot
        lot.remaining -= 1
        self.tool_wear += 1
        if self.tool_wear >= self._maint_interval:
            self.tool_wear = 0
            self._maint_interval = int(self._rng_lot.integers(18000, 32000))
        return _Context(ambient, humidity, cn[2], lot, self.tool_wear, self._shift(epoch_s))

    def _latent_deviations(self, sc: Scenario) -> tuple[tuple[float, ...], float, float]:
        """AR(1) latents plus excursion episodes (a fixed number of draws per cycle); and the two
        uniforms that decide the defect and its mechanism."""
        r = self._rng_proc
        z = r.standard_normal(len(LATENTS))
        u_start = r.random(N_EXCURSION_TYPES)
        exc_draw = r.random((N_EXCURSION_TYPES, 2))
        u_defect, u_mech = r.random(2)
        sig = np.array([s for _, s in LATENTS])
        self._lat = AR_PHI * self._lat + math.sqrt(1 - AR_PHI**2) * sig * z
        dev = self._lat.copy()
        for k in range(N_EXCURSION_TYPES):
            if self._exc_left[k] <= 0 and u_start[k] < EXCURSION_START_P * sc.excursion_rate_factor:
                n = 6 + int(-14.0 * math.log(1.0 - exc_draw[k, 0]))
                self._exc_len[k] = n
                self._exc_left[k] = n
                self._exc_mag[k] = (0.6 + 0.7 * exc_draw[k, 1]) * EXCURSIONS[k][2]
            if self._exc_left[k] > 0:
                n, left = self._exc_len[k], self._exc_left[k]
                j = n - left
                ramp = min(1.0, (j + 1) / 3.0, left / 3.0)
                dev[_EXC_LATENT[k]] += ramp * self._exc_mag[k]
                self._exc_left[k] -= 1
        values = tuple(float(x) for x in dev)
        return values[:-1] + (max(values[-1], 0.0),), u_defect, u_mech  # a check ring leaks or it does not

    def _process_values(self, ctx: _Context, dev: tuple[float, ...]) -> _Process:
        """Set-points (the set-point table compensates for the lot) and actuals. Conditions move the
        readings (module constants ENV_*), the process window moves with them; the defect mechanisms
        only see the latent deviations."""
        p, lot = self.product, ctx.lot
        d_melt, d_inj, d_hold, d_cool, d_dry, d_mould, leak = dev
        s_melt, s_mould, s_hold = SHIFT_OFFSETS[ctx.shift]
        mfi_dev = REFERENCE_MFI - lot.mfi
        melt_sp = p.melt_c + COMP_MELT_C_PER_MFI * mfi_dev + s_melt
        mould_sp = p.mould_c + s_mould
        inj_sp = p.inj_bar * (1.0 + COMP_INJ_PER_MFI * mfi_dev)
        hold_sp = p.hold_bar * (1.0 + COMP_HOLD_PER_MFI * mfi_dev) + s_hold
        amb_dev = ctx.ambient - 21.0
        hum_dev = ctx.humidity - 48.0
        melt_env = ENV_MELT_C_PER_C * amb_dev
        dp_expected = -40.0 + 0.22 * hum_dev
        # the dryer's drying time is set for the supplier's usual moisture: a wetter lot than that
        # leaves moisture the return air shows
        lot_wet = (lot.moisture - lot.supplier.moisture_mean) / lot.supplier.moisture_sd
        dew_point = dp_expected + d_dry + 0.8 * lot_wet + 0.4 * ctx.noise
        melt_real = melt_sp + melt_env + d_melt
        mould_real = mould_sp + ENV_MOULD_C_PER_C * amb_dev + d_mould
        inj_peak = (inj_sp - ENV_INJ_BAR_PER_C_MELT * (d_melt + melt_env) + d_inj
                    - ENV_INJ_BAR_PER_PCT_RH * hum_dev - 120.0 * leak - 3.0 * max(d_dry, 0.0))
        inj_time = (p.inj_time_s * (1.0 - 0.004 * (d_melt + melt_env) - COMP_INJ_TIME_PER_MFI * mfi_dev
                                    + ENV_INJ_TIME_PER_PCT_RH * hum_dev)
                    - 0.0006 * d_inj + 0.12 * leak)
        cool_needed = p.cooling_s + 0.12 * (mould_real - p.mould_c)
        cushion = (p.cushion_mm - ENV_CUSHION_MM_PER_C_MELT * (d_melt + melt_env) - 0.004 * d_inj
                   - 0.015 * d_hold - 1.6 * leak - ENV_CUSHION_MM_PER_PCT_RH * hum_dev
                   - COMP_CUSHION_MM_PER_MFI * mfi_dev)
        return _Process(melt_sp, melt_env, melt_real, mould_real, inj_peak, hold_sp + d_hold, inj_time,
                        cool_needed + d_cool, cushion, hum_dev, dp_expected, dew_point)

    def _defect(self, ctx: _Context, dev: tuple[float, ...], proc: _Process, u_defect: float,
                u_mech: float) -> tuple[dict[str, float], float, bool, str | None]:
        """The hidden defect mechanisms, relative to conditions: their probabilities, the part's
        defect probability, whether it is defective and by which mechanism."""
        d_melt, d_inj, d_hold, d_cool, _d_dry, _d_mould, leak = dev
        wear_frac = ctx.wear / 30000.0
        sev = {
            "short_shot": -d_melt / 4.0 - d_inj / 60.0 + 2.6 * leak,
            "flash": d_inj / 45.0 + d_melt / 4.5 + 0.5 * wear_frac**2,
            "sink_mark": -d_hold / 30.0 - d_cool / 0.8,
            "splay": (proc.dew_point - proc.dp_expected) / 4.0,
        }
        probs = {m: _mech_p(s) for m, s in sev.items()}
        probs["contamination"] = 0.002
        p_ok = 1.0
        for v in probs.values():
            p_ok *= 1.0 - v
        p_defect = 1.0 - p_ok
        defect = bool(u_defect < p_defect)
        mechanism = None
        if defect:
            total = sum(probs.values())
            acc = 0.0
            for m in MECHANISMS:
                acc += probs[m] / total
                if u_mech <= acc:
                    mechanism = m
                    break
            mechanism = mechanism or MECHANISMS[-1]
        return probs, p_defect, defect, mechanism

    def _phases(self, t0: int, proc: _Process) -> _Phases:
        """Close, inject, hold, cool (recovery in its first 55 %), open: their lengths and the cycle end."""
        p = self.product
        nz = self._rng_noise.standard_normal(8)
        close_s = p.close_s + 0.02 * nz[0]
        inj_s = max(0.3, proc.inj_time + 0.01 * nz[1])
        hold_s = p.hold_time_s
        cool_s = max(1.0, proc.cool_act + 0.05 * nz[2])
        open_s = p.open_s + 0.03 * abs(nz[3])
        cycle_s = close_s + inj_s + hold_s + cool_s + open_s
        t_end = t0 + int(round(cycle_s * 1000.0)) * 1000  # boundaries stay at .xxx500 s: never on a sample grid
        c1 = close_s
        c2 = c1 + inj_s
        c3 = c2 + hold_s
        return _Phases(t_end, (t_end - t0) / US, inj_s, cool_s, c1, c2, c3, c3 + 0.55 * cool_s, c3 + cool_s,
                       float(nz[4]))

    def _continuous(self, t0: int, sc: Scenario, ctx: _Context, dev: tuple[float, ...], proc: _Process,
                    ph: _Phases, bad_status: dict[str, int]) -> list[ContSamples]:
        """The continuous signals' samples on their regular grids inside the cycle."""
        drift = 0.0
        if sc.drift_signal:
            hours = (t0 - self._scenario_since_us) / (3600.0 * US)
            drift = min(sc.drift_max, sc.drift_c_per_h * hours)
        cont: list[ContSamples] = []
        for period, names in self._groups:
            k0 = -(-t0 // period)
            k1 = -(-ph.t_end // period)
            t_us = np.arange(k0, k1, dtype=np.int64) * period
            tau = (t_us - t0) / US
            noise = self._rng_noise.standard_normal((len(names), len(t_us)))
            for i, sname in enumerate(names):
                v = self._signal(sname, tau, noise[i], ctx, dev, proc, ph, drift)
                cont.append(self._finish_signal(sname, sc, t_us, v, bad_status))
        return cont

    def _signal(self, sname: str, tau: np.ndarray, e: np.ndarray, ctx: _Context, dev: tuple[float, ...],
                proc: _Process, ph: _Phases, drift: float) -> np.ndarray:
        """One continuous signal's values at ``tau`` seconds into the cycle (``e``: its unit noise)."""
        p = self.product
        d_melt = dev[0]
        wear_frac = ctx.wear / 30000.0
        in_close = tau < ph.c1
        in_inj = (tau >= ph.c1) & (tau < ph.c2)
        in_hold = (tau >= ph.c2) & (tau < ph.c3)
        in_rec = (tau >= ph.c3) & (tau < ph.rec_end)
        in_open = tau >= ph.c4
        clamped = (tau >= ph.c1) & (tau < ph.c4)
        zone = ENV_ZONE_SHARE * proc.melt_env
        if sname == "barrel_zone1_temp_c":
            v = proc.melt_sp - 18.0 + 0.3 * d_melt + zone + 0.4 * e
        elif sname == "barrel_zone2_temp_c":
            v = proc.melt_sp - 10.0 + 0.8 * d_melt + zone + 0.4 * e
        elif sname == "barrel_zone3_temp_c":
            v = proc.melt_sp - 4.0 + 0.5 * d_melt + zone + 0.4 * e
        elif sname == "nozzle_temp_c":
            v = proc.melt_sp + 3.0 + 0.6 * d_melt + zone + 0.3 * e
        elif sname == "melt_temp_c":
            v = proc.melt_real - 1.5 * in_inj + 0.5 * e + drift
        elif sname == "mould_temp_c":
            since = np.where(tau >= ph.c1, tau - ph.c1, tau + ph.cycle_s - ph.c1)
            v = proc.mould_real + 3.5 * np.exp(-since / 6.0) + 0.25 * e
        elif sname == "injection_pressure_bar":
            u = np.clip((tau - ph.c1) / ph.inj_s, 0.0, 1.0)
            v = (in_inj * proc.inj_peak * u**0.7 + in_hold * proc.hold_act + in_rec * 60.0
                 + (in_inj * 6.0 + 1.0) * e)
            v = np.maximum(v, 0.0)
        elif sname == "hold_pressure_bar":
            v = np.maximum(in_hold * (proc.hold_act + 3.0 * e) + (~in_hold) * 0.4 * np.abs(e), 0.0)
        elif sname == "screw_speed_rpm":
            v = np.maximum(in_rec * (p.screw_rpm + 0.04 * proc.hum_dev + 1.5 * e) + (~in_rec) * 0.2 * np.abs(e), 0.0)
        elif sname == "clamp_force_kn":
            force = p.clamp_kn * (1.0 - 0.05 * wear_frac)
            ramp_in = np.clip(tau / max(ph.c1, 1e-3), 0.0, 1.0)
            ramp_out = np.clip(1.0 - (tau - ph.c4) / max(ph.cycle_s - ph.c4, 1e-3), 0.0, 1.0)
            v = (in_close * force * ramp_in + clamped * (force + 0.04 * in_inj * proc.inj_peak)
                 + in_open * force * ramp_out * 0.2 + 5.0 * e)
            v = np.maximum(v, 0.0)
        elif sname == "vibration_mm_s":
            v = np.abs(1.1 + 0.9 * wear_frac + 2.5 * (in_close | in_open) + 0.6 * in_inj + 0.15 * e)
        else:  # pragma: no cover - table and code out of sync
            raise KeyError(sname)
        return np.asarray(v, dtype=np.float64)

    def _finish_signal(self, sname: str, sc: Scenario, t_us: np.ndarray, v: np.ndarray,
                       bad_status: dict[str, int]) -> ContSamples:
        """A stuck sensor's frozen reading and a scenario's bad status codes applied to a signal."""
        n = len(t_us)
        if sc.stuck_signal == sname:
            stuck = self._stuck_value.setdefault(sname, self._last_value.get(sname, float(v[0]) if n else 0.0))
            v = np.full(n, stuck)
        else:
            self._stuck_value.pop(sname, None)
        if n:
            self._last_value[sname] = float(v[-1])
        status = None
        code = bad_status.get(sname)
        if code:
            status = np.full(n, code, dtype=np.uint32)
            if is_bad(code):
                v = np.full(n, np.nan)
        return ContSamples(sname, t_us, v, status)

    def _publish(self, t0: int, name: str, ctx: _Context, proc: _Process, ph: _Phases, bad_status: dict[str, int],
                 cont: list[ContSamples], probs: dict[str, float], p_defect: float, defect: bool,
                 mechanism: str | None) -> Cycle:
        """The values written at cycle end, in write order, the part row, its ground truth, and the
        inspection result of the part made ``label_delay`` cycles ago."""
        p, lot, idx = self.product, ctx.lot, self.index
        serial = f"{self.prefix}-{idx:06d}"
        t_end = ph.t_end
        defect_code = DEFECT_CODES[mechanism] if mechanism else None
        ambient_r = round(ctx.ambient, 2)
        per_cycle = [
            ("injection_time_s", round(ph.inj_s, 3)),
            ("cushion_mm", round(proc.cushion + 0.12 * ph.cushion_noise, 3)),
            ("cooling_time_s", round(ph.cool_s, 3)),
            ("cycle_time_s", round(ph.cycle_s, 3)),
            ("ambient_temp_c", ambient_r),
            ("humidity_pct", round(ctx.humidity, 2)),
            ("material_lot", lot.lot_id),
            ("supplier", lot.supplier.name),
            ("lot_moisture_pct", lot.moisture),
            ("lot_mfi_g10min", lot.mfi),
            ("dryer_dew_point_c", round(proc.dew_point, 2)),
            ("tool_wear_shots", ctx.wear),
            ("shift", ctx.shift),
            ("product", p.name),
        ]
        events: list[tuple[str, object, int]] = []
        for nm, val in per_cycle:
            code = bad_status.get(nm, GOOD)
            events.append((nm, float("nan") if is_bad(code) else val, code))
        events += [
            ("cycle_start_time", self.datetime_at(t0), GOOD),
            ("cycle_end_time", self.datetime_at(t_end), GOOD),
            ("part_serial", serial, GOOD),
            ("part_counter", idx, GOOD),
            ("cycle_complete", bool(idx % 2), GOOD),
        ]
        part = {
            "line_id": self.line_id, "serial": serial, "cycle_start_us": t0, "cycle_end_us": t_end,
            "product": p.name, "material_lot": lot.lot_id, "supplier": lot.supplier.name, "shift": ctx.shift,
            "ambient_temp_c": ambient_r, "humidity_pct": round(ctx.humidity, 2), "lot_moisture_pct": lot.moisture,
            "lot_mfi_g10min": lot.mfi, "dryer_dew_point_c": round(proc.dew_point, 2), "tool_wear_shots": ctx.wear,
            "scenario": name, "defect": defect, "defect_code": defect_code, "inspected_at_us": None,
        }
        truth = {
            "line_id": self.line_id, "serial": serial, "mechanism": mechanism, "defect_prob": p_defect,
            "defect": defect, "defect_code": defect_code, "scenario": name,
            **{f"p_{m}": probs[m] for m in MECHANISMS},
        }
        self._pending.append(part)
        inspected = None
        if len(self._pending) > self.label_delay:
            inspected = self._pending.popleft()
            inspected["inspected_at_us"] = t_end
            events += [  # result and code first, the serial last: it is the trigger, like part_serial
                ("inspection_result", "NOK" if inspected["defect"] else "OK", GOOD),
                ("defect_code", inspected["defect_code"] or "", GOOD),
                ("inspection_serial", inspected["serial"], GOOD),
            ]
        self.t_us = t_end
        return Cycle(self.line_id, idx, serial, t0, t_end, name, cont, events, part, truth, inspected)

    def _bad_statuses(self, sc: Scenario) -> dict[str, int]:
        """Status-code episodes of the bad-quality scenario (fixed draws per cycle)."""
        plan = (
            ("vibration_mm_s", BAD_SENSOR_FAILURE),
            ("melt_temp_c", UNCERTAIN_LAST_USABLE),
            ("screw_speed_rpm", UNCERTAIN_SENSOR_NOT_ACCURATE),
            ("ambient_temp_c", BAD_COMMUNICATION_ERROR),
        )
        u = self._rng_bad.random((len(plan), 2))
        out: dict[str, int] = {}
        for i, (nm, code) in enumerate(plan):
            left = self._bad_left.get(nm, 0)
            if left <= 0 and u[i, 0] < 0.08:
                left = 1 + int(-4.0 * math.log(1.0 - u[i, 1]))
            if left > 0:
                self._bad_left[nm] = left - 1
                if sc.bad_quality:
                    out[nm] = code
        return out

    def pending_inspections(self) -> list[dict]:
        """Parts made but not yet inspected (oldest first)."""
        return list(self._pending)
