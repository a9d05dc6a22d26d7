"""UI pages: one module per page, its layout and its callbacks together.

Each page module defines ``PAGE``: a :class:`Page` with its path, title, the role it needs, a
``layout(ctx, **params)`` function and a ``register(app, ctx)`` function that adds its callbacks
(always through :func:`ui.security.secured_callback`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Page", "all_pages"]


@dataclass(frozen=True)
class Page:
    path: str                    # e.g. "/alerts/<alert_id>"
    title: str
    role: str                    # operator | engineer | admin
    layout: Callable[..., Any]
    register: Callable[..., None]
    nav: bool = True             # shown in the top navigation

    def match(self, pathname: str) -> dict[str, str] | None:
        pattern = "^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", self.path.rstrip("/") or "/") + "/?$"
        m = re.match(pattern, pathname or "/")
        return m.groupdict() if m else None


def all_pages() -> list[Page]:
    from ui.pages import (alert_detail, alerts, audit, conditions, handover, line_overview, models, monitoring,
                          playbook, roster, shadow, users)

    return [line_overview.PAGE, alerts.PAGE, alert_detail.PAGE, handover.PAGE, models.PAGE, shadow.PAGE,
            conditions.PAGE, monitoring.PAGE, playbook.PAGE, audit.PAGE, users.PAGE, roster.PAGE]
