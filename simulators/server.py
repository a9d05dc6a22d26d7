"""The live OPC UA server: drives one :class:`~simulators.line_model.LineModel` per line against the
wall clock and publishes every value with its simulated source timestamp and status code.

Owns: the endpoint's lifecycle, pacing (``speed``), batched writes, scenario switching (writable
``Simulator.Scenario`` node, a ``SetScenario`` method, ``set_scenario()``), the server-restart
mechanism, security and users. The node layout is :mod:`simulators.address_space`, the order of
writes :mod:`simulators.write_groups`, the no-copy write :mod:`simulators.fast_write`. Imports
nothing of ``pq``.

Why this file is over 400 lines: :class:`SimulatorServer` is one state machine. Its lifecycle,
control callbacks and publish loop share the same state (the clock anchor, the paused flag, the
endpoint's up flag, the node slots and counters), and no method is over 60 lines; spreading the
class over mixins would split that state across files without making any piece simpler. The parts
that do not touch that state live in the modules named above.

Example::

    async with SimulatorServer(lines=2, seed=7, speed=20, port=0) as sim:
        print(sim.endpoint)              # opc.tcp://127.0.0.1:PORT/pq/sim/
        await sim.wait_parts(5)
        sim.ground_truth()               # one row per completed part
"""

from __future__ import annotations

import asyncio
import logging
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from asyncua import Server, ua

from .address_space import VTYPE, NodeBatch, add_line, add_signal_node, add_simulator_object
from .fast_write import fast_path_available, fast_write
from .line_model import US, LineModel, is_bad
from .scenarios import check_source_change, get_scenario, parse_schedule
from .security import APPLICATION_URI, PasswordUserManager, ensure_certificate, policies_for
from .signals import NAMESPACE_URI, SIGNALS, SIGNALS_BY_NAME, SIMULATOR_FOLDER, gate_node_ids, line_id
from .source_schema import apply_source_change, slot_effect
from .write_groups import LineRunner

logger = logging.getLogger(__name__)

_NULL = ua.Variant(None, ua.VariantType.Null)
# flat-out mode (speed 0) waits while more than this many notifications wait to be published, so a
# benchmark measures delivery, not how fast queues overflow
FLAT_OUT_MAX_PENDING = 10_000
YIELD_EVERY = 1000  # values written between two yields to the event loop


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raise OSError with a clear message if ``host:port`` cannot be bound."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


@dataclass
class _NodeSlot:
    nodeid: ua.NodeId
    vtype: ua.VariantType
    dtype: str
    attval: object = None  # asyncua AttributeValue of the Value attribute
    last: tuple | None = None  # (value, status) last written
    last_dv: ua.DataValue | None = None
    written: int = 0
    published: int = 0
    scale: float = 1.0  # a source change: values written as value * scale + offset (°C -> °F)
    offset: float = 0.0
    removed: bool = False  # a source change deleted the node: nothing is written


@dataclass
class _Stats:
    values_written: int = 0
    values_published: int = 0
    batches: int = 0
    downtime_skipped: int = 0
    lag_s: float = 0.0
    restarts: int = 0
    started_at: float = field(default_factory=time.time)


def _check_arguments(*, lines: int, speed: float, sample_hz: float, port: int, write_mode: str,
                     restart_every_s: float, restart_down_s: float) -> None:
    """Refuse :class:`SimulatorServer` arguments it cannot run with, before anything is built."""
    if lines < 1:
        raise ValueError(f"lines must be >= 1, got {lines}")
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    if sample_hz <= 0:
        raise ValueError(f"sample_hz must be > 0, got {sample_hz}")
    if port < 0 or port > 65535:
        raise ValueError(f"port must be in 0..65535, got {port}")
    if write_mode not in ("fast", "naive"):
        raise ValueError(f"write_mode must be 'fast' or 'naive', got {write_mode!r}")
    if restart_down_s < 0 or restart_every_s <= 0:
        raise ValueError("restart_every_s must be > 0 and restart_down_s >= 0")


class SimulatorServer:
    """OPC UA server serving ``lines`` simulated injection-moulding lines.

    Parameters: ``lines`` (>= 1), ``seed``, ``speed`` (simulated seconds per wall second; 0 runs flat
    out, for benchmarks), ``scenario`` (name or schedule, see :mod:`simulators.scenarios`), ``host``,
    ``port`` (0 picks a free port), ``sample_hz`` (continuous signals), ``signal_hz`` (per-signal
    override), ``label_delay`` (cycles), ``security`` ("none", "sign", "encrypt", "all"),
    ``cert_dir`` (server certificate and key, generated if absent), ``users`` ({name: password};
    anonymous refused when given), ``start`` (simulated clock origin, default now; source timestamps
    start there), ``restart_every_s``/``restart_down_s`` (server-restart scenario), ``paused``
    (start without publishing; write ``Simulator.Paused`` = False or call :meth:`resume`),
    ``write_mode`` ("fast": batched, no per-value deep copy; "naive": ``Node.write_value`` per value,
    the baseline of the benchmark), ``first_serial`` (number of every line's first part: a restarted
    line carries on counting, so serials never repeat those already stored).
    """

    def __init__(
        self,
        lines: int = 1,
        seed: int = 0,
        speed: float = 1.0,
        scenario: str | list | tuple = "normal",
        host: str = "127.0.0.1",
        port: int = 4840,
        sample_hz: float = 10.0,
        signal_hz: dict[str, float] | None = None,
        label_delay: int = 3,
        security: str = "none",
        cert_dir: str | Path | None = None,
        users: dict[str, str] | None = None,
        start: datetime | None = None,
        restart_every_s: float = 60.0,
        restart_down_s: float = 5.0,
        paused: bool = False,
        write_mode: str = "fast",
        endpoint_path: str = "/pq/sim/",
        first_serial: int = 1,
        season_day: float | None = None,
    ) -> None:
        _check_arguments(lines=lines, speed=speed, sample_hz=sample_hz, port=port, write_mode=write_mode,
                         restart_every_s=restart_every_s, restart_down_s=restart_down_s)
        self.policies = policies_for(security)
        self.schedule = parse_schedule(scenario)
        self.security = security
        self.lines = int(lines)
        self.seed = int(seed)
        self.speed = float(speed)
        self.host = host
        self.port = int(port)
        self.sample_hz = float(sample_hz)
        self.label_delay = int(label_delay)
        self.users = dict(users) if users else None
        self.cert_dir = Path(cert_dir) if cert_dir else Path(tempfile.gettempdir()) / "pq-simulator-certs"
        self.restart_every_s = float(restart_every_s)
        self.restart_down_s = float(restart_down_s)
        self.write_mode = write_mode
        self.endpoint_path = endpoint_path if endpoint_path.startswith("/") else "/" + endpoint_path
        start = start or datetime.now(timezone.utc).replace(microsecond=0)
        self.start_time = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        self.line_ids = [line_id(i) for i in range(self.lines)]
        self.models = [
            LineModel(
                lid,
                seed=seed,
                start=self.start_time,
                sample_hz=sample_hz,
                scenario=self.schedule,
                label_delay=label_delay,
                signal_hz=signal_hz,
                line_index=i,
                first_serial=first_serial,
                season_day=season_day,
            )
            for i, lid in enumerate(self.line_ids)
        ]
        self._init_runtime_state(paused, write_mode)

    def _init_runtime_state(self, paused: bool, write_mode: str) -> None:
        """What changes while the server runs; the asyncio objects wait for :meth:`start` (they need
        the running loop)."""
        self._runners: list[LineRunner] = []
        self._slots: list[list[_NodeSlot]] = []
        self._server: Server | None = None
        self._ns = 2
        self._up = False
        self._running = False
        self._paused = bool(paused)
        self._resume: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._restart_lock: asyncio.Lock | None = None
        self._stats = _Stats()
        # what clients wrote to each line's QualityGate (a PLC's divert request), kept across restarts
        self._gate_writes: dict[str, list[tuple[str, object]]] = {lid: [] for lid in self.line_ids}
        self._scenario = self.schedule[0][1] if len(self.schedule) == 1 else "schedule"
        self._line_override: dict[str, str | None] = {}
        self._anchor_wall = 0.0
        self._anchor_sim_us = 0
        self._fast = write_mode == "fast" and fast_path_available()
        if write_mode == "fast" and not self._fast:
            logger.warning("asyncua internals changed: falling back to write_attribute_value (slower)")
        self._sim_nodes: dict[str, ua.NodeId] = {}
        self._source_changes: dict[str, set[str]] = {lid: set() for lid in self.line_ids}  # see source_schema.py
        self.server_certificate_path: Path | None = None
        self.server_key_path: Path | None = None

    # -- public properties ---------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{self.endpoint_path}"

    @property
    def namespace_index(self) -> int:
        return self._ns

    @property
    def scenario(self) -> str:
        return self._scenario

    @property
    def is_up(self) -> bool:
        """True while the OPC UA endpoint is listening (False during a restart)."""
        return self._up

    @property
    def sim_time(self) -> datetime:
        return self.start_time + timedelta(microseconds=self._sim_now_us())

    def node_id(self, line: str, tag: str) -> str:
        """``node_id('line-1', 'melt_temp_c') == 'ns=2;s=line-1.InjectionUnit.melt_temp_c'``."""
        return SIGNALS_BY_NAME[tag].node_id(line, self._ns)

    def tag_map(self):
        """DataFrame: node_id, line_id, tag, unit, role, dtype - one row per published variable."""
        import pandas as pd

        rows = [
            {"node_id": s.node_id(lid, self._ns), "line_id": lid, "tag": s.name, "unit": s.unit, "role": s.role,
             "dtype": s.dtype}
            for lid in self.line_ids
            for s in SIGNALS
        ]
        return pd.DataFrame(rows)

    def write_tag_map(self, path: str | Path) -> Path:
        """Write :meth:`tag_map` as CSV (node id -> tag name) for a connector's tag map."""
        path = Path(path)
        self.tag_map().to_csv(path, index=False)
        return path

    # -- lifecycle -------------------------------------------------------------------------------------
    async def __aenter__(self) -> "SimulatorServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space, start listening and start publishing (unless paused)."""
        if self._running:
            return
        if self.port == 0:
            self.port = free_port(self.host)
        if self.policies != policies_for("none"):
            cert, key = await ensure_certificate(self.cert_dir, self.host)
            self.server_certificate_path, self.server_key_path = cert, key
        self._resume = asyncio.Event()
        self._restart_lock = asyncio.Lock()
        if not self._paused:
            self._resume.set()
        self._runners = [LineRunner(m) for m in self.models]
        self._slots = [
            [_NodeSlot(ua.NodeId(s.node_id_string(lid), 2), VTYPE[s.dtype], s.dtype) for s in SIGNALS]
            for lid in self.line_ids
        ]
        for lid in self.line_ids:
            self._apply_slot_effects(lid)
        await self._start_ua()
        self._running = True
        self._stats.started_at = time.time()
        self._anchor_wall = time.monotonic()
        self._anchor_sim_us = 0
        self._tasks = [asyncio.create_task(self._publish_loop(), name="pq-sim-publish"),
                       asyncio.create_task(self._restart_loop(), name="pq-sim-restart")]
        logger.info("simulator serving %d line(s) on %s (seed %d, speed %s, scenario %s, security %s)",
                    self.lines, self.endpoint, self.seed, self.speed or "max", self.scenario, self.security)

    async def stop(self) -> None:
        """Stop publishing and close the endpoint."""
        if not self._running:
            return
        self._running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        await self._stop_ua()
        logger.info("simulator on %s stopped after %d values", self.endpoint, self._stats.values_written)

    async def serve_forever(self) -> None:
        """Run until cancelled (used by the CLI)."""
        await self.start()
        try:
            while True:
                await asyncio.sleep(3600)
        finally:
            await self.stop()

    async def restart(self, down_s: float = 2.0) -> None:
        """Take the endpoint down for ``down_s`` seconds and bring it back on the same port.

        The line keeps producing meanwhile; values made while down are not published (a client sees
        the then-current values when it resubscribes).
        """
        assert self._restart_lock is not None, "server not started"
        async with self._restart_lock:
            logger.warning("simulator endpoint %s going down for %.1f s", self.endpoint, down_s)
            await self._stop_ua()
            await asyncio.sleep(down_s)
            if self._running:
                await self._start_ua()
                self._stats.restarts += 1
                logger.info("simulator endpoint %s is back", self.endpoint)

    def pause(self) -> None:
        """Stop the simulated clock (nothing is published until :meth:`resume`)."""
        if not self._paused:
            self._anchor_sim_us = self._sim_now_us()
            self._paused = True
            if self._resume is not None:
                self._resume.clear()
            self._set_sim_node("Paused", True)

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self._anchor_wall = time.monotonic()
            if self._resume is not None:
                self._resume.set()
            self._set_sim_node("Paused", False)

    def set_speed(self, speed: float) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self._anchor_sim_us = self._sim_now_us()
        self._anchor_wall = time.monotonic()
        self.speed = float(speed)
        self._set_sim_node("Speed", self.speed)

    def set_scenario(self, name: str, line: str | None = None) -> None:
        """Switch scenario from each line's next cycle on; ``line`` limits it to one line.

        ``set_scenario("normal")`` also clears per-line overrides.
        """
        get_scenario(name)
        if line is None:
            self._scenario = name
            self._line_override.clear()
            for m in self.models:
                m.set_scenario(name)
            self._set_sim_node("Scenario", name)
            for lid in self.line_ids:
                self._set_sim_node(f"{lid}.Scenario", "")
        else:
            if line not in self.line_ids:
                raise ValueError(f"unknown line {line!r}, expected one of: {', '.join(self.line_ids)}")
            self.models[self.line_ids.index(line)].set_scenario(name)
            self._line_override[line] = name
            self._set_sim_node(f"{line}.Scenario", name)
        logger.info("scenario set to %s on %s", name, line or "all lines")

    def set_season_day(self, day: float | None) -> None:
        """Hall climate of day-of-year ``day`` on every line from its next cycle on (None: follow the clock)."""
        for m in self.models:
            m.set_season_day(day)
        logger.info("season set to %s on all lines", "the clock's" if day is None else f"day {day:g} of the year")

    def line_scenario(self, line: str) -> str:
        return self.models[self.line_ids.index(line)].scenario_at(self.models[self.line_ids.index(line)].t_us)

    # -- data for tests --------------------------------------------------------------------------------
    def ground_truth(self):
        """DataFrame of completed parts: line_id, serial, mechanism, defect_prob, defect, defect_code,
        scenario, p_<mechanism>..., inspected (label already published)."""
        import pandas as pd

        rows = []
        for r in self._runners:
            pending = {p["serial"] for p in r.model.pending_inspections()}
            for t in r.completed:
                rows.append({**t, "inspected": t["serial"] not in pending})
        cols = ["line_id", "serial", "mechanism", "defect_prob", "defect", "defect_code", "scenario", "inspected"]
        return pd.DataFrame(rows, columns=None if rows else cols)

    def parts(self):
        """DataFrame of completed parts in the history ``parts`` layout (see simulators.history)."""
        from .history import parts_frame

        return parts_frame([p for r in self._runners for p in r.parts], self.models[0].start)

    def published_counts(self) -> dict[tuple[str, str], int]:
        """Values a default (StatusValue) subscriber receives, per (line_id, tag): writes whose value or
        status differs from the previous write, made while the endpoint was up."""
        return {(lid, s.name): self._slots[i][j].published
                for i, lid in enumerate(self.line_ids) for j, s in enumerate(SIGNALS)}

    def gate_writes(self, line_id: str) -> list[tuple[str, object]]:
        """Values clients wrote to ``line_id``'s QualityGate variables, in order: (name, value)."""
        return list(self._gate_writes[line_id])

    def gate_node_ids(self, line_id: str) -> dict[str, str]:
        """Node ids of ``line_id``'s QualityGate variables: Quarantine, RiskScore, RiskSerial."""
        return gate_node_ids(line_id, self.namespace_index)

    def written_counts(self) -> dict[tuple[str, str], int]:
        """All writes per (line_id, tag) made while the endpoint was up, changed or not."""
        return {(lid, s.name): self._slots[i][j].written
                for i, lid in enumerate(self.line_ids) for j, s in enumerate(SIGNALS)}

    def stats(self) -> dict:
        """Counters: values_written, values_published, batches, restarts, lag_s (publisher behind the clock)."""
        s = self._stats
        return {"values_written": s.values_written, "values_published": s.values_published, "batches": s.batches,
                "restarts": s.restarts, "lag_s": s.lag_s, "downtime_skipped": s.downtime_skipped,
                "parts": sum(len(r.completed) for r in self._runners), "fast_path": self._fast}

    async def wait_parts(self, n: int, timeout: float = 30.0, line: str | None = None) -> None:
        """Wait until every line (or ``line``) has completed at least ``n`` parts."""
        deadline = time.monotonic() + timeout
        runners = [r for r in self._runners if line is None or r.line_id == line]
        while min(len(r.completed) for r in runners) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} parts after {timeout} s")
            await asyncio.sleep(0.02)

    # -- OPC UA server -----------------------------------------------------------------------------------
    async def _start_ua(self) -> None:
        check_port_free(self.host, self.port)
        server = Server(user_manager=PasswordUserManager(self.users) if self.users else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("pq line simulator")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy(self.policies)
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        if self.server_certificate_path:
            await server.load_certificate(str(self.server_certificate_path))
            await server.load_private_key(str(self.server_key_path))
        self._ns = await server.register_namespace(NAMESPACE_URI)
        await self._build_address_space(server)
        await server.start()
        self._server = server
        self._up = True

    async def _stop_ua(self) -> None:
        self._up = False
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _build_address_space(self, server: Server) -> None:
        nodes = NodeBatch(self._ns)
        sim, self._sim_nodes = add_simulator_object(
            nodes, scenario=self._scenario, speed=self.speed, paused=self._paused,
            values_published=self._stats.values_published, values_written=self._stats.values_written,
            lines=self.lines, seed=self.seed)
        gate_nodes: list[tuple[str, str, ua.NodeId]] = []
        for i, lid in enumerate(self.line_ids):
            # a restarted endpoint comes back with the values (and overrides) it had
            line = add_line(nodes, i, lid, seed=self.seed, scenario_override=self._line_override.get(lid) or "",
                            last_values=[slot.last_dv for slot in self._slots[i]])
            self._sim_nodes[f"{lid}.Scenario"] = line.scenario
            gate_nodes += [(lid, gname, nid) for gname, nid in line.gate]
            for slot, nid in zip(self._slots[i], line.signals):
                slot.nodeid = nid
        aspace = await nodes.add_to(server)
        for slots in self._slots:
            for slot in slots:
                slot.attval = aspace._nodes[slot.nodeid].attributes[ua.AttributeIds.Value]
        self._hook_gate_writes(aspace, gate_nodes)
        await self._add_methods(server, sim)
        self._hook_control_writes(aspace)
        for lid, active in self._source_changes.items():  # a restarted endpoint keeps its changed schema
            done: set[str] = set()
            for change in sorted(active):
                done = await apply_source_change(server, self._ns, lid, change, done, announce=False,
                                                 add_signal=lambda tag, lid=lid: self._add_signal_back(lid, tag))

    def _hook_gate_writes(self, aspace, gate_nodes: list[tuple[str, str, ua.NodeId]]) -> None:
        """Record what clients write to each line's QualityGate (what :meth:`gate_writes` returns)."""
        for lid, gname, nid in gate_nodes:
            async def on_gate_write(_handle, dv, lid=lid, gname=gname):
                self._gate_writes[lid].append((gname, dv.Value.Value if dv.Value is not None else None))

            aspace.add_datachange_callback(nid, ua.AttributeIds.Value, on_gate_write)

    async def _add_methods(self, server: Server, sim: ua.NodeId) -> None:
        ns = self._ns
        # method SetScenario(name) -> validates, unlike a plain write
        await server.get_node(sim).add_method(
            ua.NodeId(f"{SIMULATOR_FOLDER}.SetScenario", ns), ua.QualifiedName("SetScenario", ns),
            self._method_set_scenario, [ua.VariantType.String], [])
        # method SetSeason(day of year; < 0 follows the clock): the hall climate of another season
        await server.get_node(sim).add_method(
            ua.NodeId(f"{SIMULATOR_FOLDER}.SetSeason", ns), ua.QualifiedName("SetSeason", ns),
            self._method_set_season, [ua.VariantType.Double], [])
        # method SetSourceSchema(change): the address space changes under the clients (source_schema.py)
        await server.get_node(sim).add_method(
            ua.NodeId(f"{SIMULATOR_FOLDER}.SetSourceSchema", ns), ua.QualifiedName("SetSourceSchema", ns),
            self._method_set_source_schema, [ua.VariantType.String], [])
        await server.get_node(sim).add_method(
            ua.NodeId(f"{SIMULATOR_FOLDER}.Restart", ns), ua.QualifiedName("Restart", ns),
            self._method_restart, [ua.VariantType.Double], [])

    def _hook_control_writes(self, aspace) -> None:
        """A client's write to a writable Simulator node (or a line's Scenario) acts on the simulator."""
        for key, nid in self._sim_nodes.items():
            if key in ("Scenario", "Speed", "Paused") or key.endswith(".Scenario"):
                aspace.add_datachange_callback(nid, ua.AttributeIds.Value, self._make_control_callback(key))

    def _make_control_callback(self, key: str):
        async def cb(handle, dv: ua.DataValue) -> None:
            value = dv.Value.Value if dv.Value is not None else None
            try:
                if key == "Scenario":
                    if value != self._scenario:
                        self.set_scenario(str(value))
                elif key.endswith(".Scenario"):
                    lid = key.split(".")[0]
                    current = self._line_override.get(lid) or ""
                    if value != current:
                        if value:
                            self.set_scenario(str(value), line=lid)
                        else:
                            self._line_override.pop(lid, None)
                            self.models[self.line_ids.index(lid)].set_scenario(self._scenario)
                elif key == "Speed":
                    if value != self.speed:
                        self.set_speed(float(value))
                elif key == "Paused":
                    if bool(value) != self._paused:
                        self.pause() if value else self.resume()
            except (ValueError, TypeError) as e:
                logger.warning("rejected write of %r to Simulator.%s: %s", value, key, e)
                restore = {"Scenario": self._scenario, "Speed": self.speed, "Paused": self._paused}.get(
                    key, self._line_override.get(key.split(".")[0]) or "")
                self._set_sim_node(key, restore)

        return cb

    async def _method_set_scenario(self, parent, name: ua.Variant) -> list:
        try:
            self.set_scenario(str(name.Value))
        except ValueError as e:
            logger.warning("SetScenario refused: %s", e)
            raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidArgument) from None
        return []

    async def _method_set_season(self, parent, day: ua.Variant) -> list:
        try:
            self.set_season_day(None if float(day.Value) < 0 else float(day.Value))
        except (TypeError, ValueError) as e:
            logger.warning("SetSeason refused: %s", e)
            raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidArgument) from None
        return []

    async def _method_set_source_schema(self, parent, change: ua.Variant) -> list:
        try:
            await self.set_source_schema(str(change.Value))
        except ValueError as e:
            logger.warning("SetSourceSchema refused: %s", e)
            raise ua.UaStatusCodeError(ua.StatusCodes.BadInvalidArgument) from None
        return []

    async def set_source_schema(self, change: str, line: str | None = None) -> None:
        """Change the address space under the clients (``simulators.source_schema.SOURCE_CHANGES``:
        unit_fahrenheit, remove_tag, add_tag, data_type, eu_range, restore) on every line or ``line``,
        announced with a model change event. While the endpoint is down the change waits for it."""
        check_source_change(change)
        if line is not None and line not in self.line_ids:
            raise ValueError(f"unknown line {line!r}, expected one of: {', '.join(self.line_ids)}")
        for lid in [line] if line else self.line_ids:
            if self._up and self._server is not None:
                self._source_changes[lid] = await apply_source_change(
                    self._server, self._ns, lid, change, self._source_changes[lid], source_time=self.sim_time,
                    add_signal=lambda tag, lid=lid: self._add_signal_back(lid, tag))
            else:
                self._source_changes[lid] = set() if change == "restore" else self._source_changes[lid] | {change}
            self._apply_slot_effects(lid)

    def _apply_slot_effects(self, lid: str) -> None:
        """How the line's values are written under its source changes (°F, Float, not at all)."""
        slots = self._slots[self.line_ids.index(lid)] if self._slots else []
        for slot, s in zip(slots, SIGNALS):
            slot.scale, slot.offset, vtype, slot.removed = slot_effect(self._source_changes[lid], s.name)
            slot.vtype = vtype or VTYPE[s.dtype]

    async def _add_signal_back(self, lid: str, tag: str) -> ua.NodeId:
        i, j = self.line_ids.index(lid), next(k for k, s in enumerate(SIGNALS) if s.name == tag)
        slot = self._slots[i][j]
        slot.nodeid = await add_signal_node(self._server, self._ns, lid, SIGNALS[j], slot.last_dv)
        slot.attval = self._server.iserver.aspace._nodes[slot.nodeid].attributes[ua.AttributeIds.Value]
        return slot.nodeid

    async def _method_restart(self, parent, down_s: ua.Variant) -> list:
        asyncio.get_running_loop().call_later(0.1, lambda: asyncio.ensure_future(self.restart(float(down_s.Value))))
        return []

    def _set_sim_node(self, key: str, value) -> None:
        """Update a control node without triggering its control callback's side effects twice."""
        if not self._up or self._server is None or key not in self._sim_nodes:
            return
        vt = {"Scenario": ua.VariantType.String, "Speed": ua.VariantType.Double, "Paused": ua.VariantType.Boolean,
              "ValuesPublished": ua.VariantType.UInt64, "ValuesWritten": ua.VariantType.UInt64}.get(
            key, ua.VariantType.String)
        dv = ua.DataValue(ua.Variant(value, vt), SourceTimestamp=datetime.now(timezone.utc))
        asyncio.ensure_future(self._server.write_attribute_value(self._sim_nodes[key], dv))

    # -- publishing ---------------------------------------------------------------------------------------
    def _sim_now_us(self) -> int:
        if self._paused or self.speed == 0:
            return self._anchor_sim_us
        return self._anchor_sim_us + int((time.monotonic() - self._anchor_wall) * self.speed * US)

    async def _publish_loop(self) -> None:
        try:
            while self._running:
                if self._paused:
                    await self._resume.wait()
                    continue
                batch: list = []
                if self.speed == 0:  # flat out: one cycle at a time, with back-pressure
                    for r in self._runners:
                        while self._pending_notifications() > FLAT_OUT_MAX_PENDING and not self._paused:
                            await asyncio.sleep(0.005)  # let the publisher drain
                        if self._paused or self.speed != 0:
                            break
                        batch = []
                        r.pop_cycle(batch)
                        await self._write_batch(batch)
                    self._anchor_sim_us = max(r.model.t_us for r in self._runners)
                    await asyncio.sleep(0)
                    continue
                now_us = self._sim_now_us()
                for r in self._runners:
                    r.pop_due(now_us, batch)
                if batch:
                    await self._write_batch(batch)
                next_due = min(r.next_due_us for r in self._runners)
                self._stats.lag_s = max(0.0, (now_us - next_due) / US / max(self.speed, 1e-9))
                wait_s = (next_due - self._sim_now_us()) / US / self.speed
                await asyncio.sleep(min(max(wait_s, 0.005), 0.25))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("simulator publish loop failed")
            raise

    def _pending_notifications(self) -> int:
        """Data changes queued in all subscriptions and not yet published."""
        server = self._server
        if server is None:
            return 0
        subs = server.iserver.subscription_service.subscriptions.values()
        return sum(len(q) for sub in subs for q in sub._triggered_datachanges.values())

    async def _write_batch(self, batch: list) -> None:
        """Write groups [(runner, t_us, [(sig_index, value, status)])] in order.

        Yields to the event loop every ``YIELD_EVERY`` values so that a big batch (many lines,
        catching up, flat out) never starves the network side (clients would time out).
        """
        st = self._stats
        st.batches += 1
        up = self._up and self._server is not None
        server_ts = datetime.now(timezone.utc)
        status_cache: dict[int, ua.StatusCode] = {}
        line_index = {r.line_id: k for k, r in enumerate(self._runners)}
        naive = self.write_mode == "naive"
        fast = self._fast
        count = 0
        for runner, t_us, items in batch:
            slots = self._slots[line_index[runner.line_id]]
            ts = runner.model.start + timedelta(microseconds=t_us)
            for sig, value, status in items:
                slot = slots[sig]
                if slot.removed:
                    continue
                last = slot.last
                changed = last is None or status != last[1] or (
                    value != last[0] and not (value != value and last[0] != last[0]))
                sc = status_cache.get(status)
                if sc is None:
                    sc = status_cache[status] = ua.StatusCode(status)
                if is_bad(status) or (slot.dtype != "string" and value != value):
                    variant = _NULL if is_bad(status) else ua.Variant(value, slot.vtype)
                elif slot.dtype == "double":
                    variant = ua.Variant(float(value) * slot.scale + slot.offset, slot.vtype)
                elif slot.dtype == "int":
                    variant = ua.Variant(int(value), ua.VariantType.Int64)
                else:
                    variant = ua.Variant(value, slot.vtype)
                dv = ua.DataValue(variant, StatusCode=sc, SourceTimestamp=ts, ServerTimestamp=server_ts)
                slot.last = (value, status)
                slot.last_dv = dv
                if not up:
                    st.downtime_skipped += 1
                    continue
                slot.written += 1
                st.values_written += 1
                if changed:
                    slot.published += 1
                    st.values_published += 1
                if fast:
                    fast_write(slot.attval, dv)
                elif naive:
                    await self._server.get_node(slot.nodeid).write_value(dv)
                else:
                    await self._server.write_attribute_value(slot.nodeid, dv)
                count += 1
            if count >= YIELD_EVERY:  # only between groups: a part event is never split
                count = 0
                await asyncio.sleep(0)
                up = self._up and self._server is not None
                server_ts = datetime.now(timezone.utc)

    async def _restart_loop(self) -> None:
        """Restart the endpoint periodically while a line runs the server-restart scenario."""
        last = time.monotonic()
        while self._running:
            await asyncio.sleep(0.5)
            counters_due = True
            if counters_due and self._up and self._server is not None:
                for key, value in (("ValuesPublished", self._stats.values_published),
                                   ("ValuesWritten", self._stats.values_written)):
                    self._set_sim_node(key, value)
            active = any(get_scenario(m.scenario).server_restart for m in self.models)
            if not active:
                last = time.monotonic()
                continue
            if time.monotonic() - last >= self.restart_every_s:
                await self.restart(self.restart_down_s)
                last = time.monotonic()
