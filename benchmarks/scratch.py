"""The scratch lines the suites write under in the configured store, and their removal.

A suite that writes into the store (ingest, connect, edge) uses line ids of its own
(``bench-ingest``, ``bench-connect-N``, ``bench-edge-N``: never a plant line's) and removes every
row of them before the run (an interrupted run's leftovers would count as this run's) and after it.

Example::

    delete_lines(store, "bench-edge-%", health_component="edge:bench-edge-%")
"""

from __future__ import annotations

__all__ = ["delete_lines"]


def delete_lines(store, line_like: str, *, health_component: str | None = None) -> None:
    """Delete the lines whose id is LIKE ``line_like`` and everything written for them: samples of
    their tags, parts and their features, inspections, predictions and shadow scores, alerts and their events, line
    events and health rows (those of their lines, and of components LIKE ``health_component``),
    then their tags and the lines themselves."""
    from sqlalchemy import delete, or_, select

    from pq.storage import schema as sc

    parts = select(sc.parts.c.id).where(sc.parts.c.line_id.like(line_like))
    alerts = select(sc.alerts.c.id).where(sc.alerts.c.line_id.like(line_like))
    tags = select(sc.tags.c.id).where(sc.tags.c.line_id.like(line_like))
    health = sc.component_health.c.line_id.like(line_like)
    if health_component is not None:
        health = or_(health, sc.component_health.c.component.like(health_component))
    with store.engine.begin() as conn:
        conn.execute(delete(sc.alert_events).where(sc.alert_events.c.alert_id.in_(alerts)))
        conn.execute(delete(sc.part_features).where(sc.part_features.c.part_id.in_(parts)))
        conn.execute(delete(sc.samples).where(sc.samples.c.tag_id.in_(tags)))
        for table in (sc.alerts, sc.predictions, sc.shadow_scores, sc.parts, sc.inspections, sc.line_events, sc.tags):
            conn.execute(delete(table).where(table.c.line_id.like(line_like)))
        conn.execute(delete(sc.component_health).where(health))
        conn.execute(delete(sc.lines).where(sc.lines.c.id.like(line_like)))
