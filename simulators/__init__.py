"""OPC UA production-line simulator: stands in for a plant. Imports nothing of pq (asyncua, numpy,
pandas, pyarrow, click and the standard library only).

Public API: the signal table, the deterministic line model, the live server, history generation.
Heavy modules (asyncua, pandas) are imported lazily so that ``import simulators`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from .line_model import MECHANISMS, PRODUCTS, SUPPLIERS, Cycle, LineModel
from .scenarios import SCENARIOS, SOURCE_CHANGES, parse_schedule
from .signals import NAMESPACE_URI, SIGNALS, SignalSpec

__all__ = [
    "Cycle",
    "HistoryResult",
    "LineModel",
    "MECHANISMS",
    "NAMESPACE_URI",
    "PRODUCTS",
    "SCENARIOS",
    "SIGNALS",
    "SOURCE_CHANGES",
    "SUPPLIERS",
    "SignalSpec",
    "SimulatorServer",
    "generate_history",
    "parse_schedule",
]


def __getattr__(name: str) -> Any:
    if name == "SimulatorServer":
        from .server import SimulatorServer

        return SimulatorServer
    if name in ("generate_history", "HistoryResult"):
        from . import history

        return getattr(history, name)
    raise AttributeError(name)
