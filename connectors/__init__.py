"""OPC UA connector: tag maps, sessions (subscribe, reconnect, security), browse, certificates.

Turns a server's notifications into samples, part events and inspections, which go to the
durable spool (``pq.spool``) and from there to the store, and to in-process listeners (the edge
runtime). Imports ``pq``; knows nothing of models, ui or simulators.

Public API: :func:`load_tagmap`, :class:`TagMap`, :class:`ConnectorSession`, :class:`Listener`,
:func:`run_connector`, :func:`browse_server`.
"""

from connectors.tagmap import TagMap, load_tagmap, parse_tagmap

__all__ = ["TagMap", "load_tagmap", "parse_tagmap", "ConnectorSession", "Listener", "run_connector", "browse_server"]


def __getattr__(name):  # asyncua is imported only when a session is really needed
    if name in ("ConnectorSession", "Listener"):
        from connectors.opcua import session

        return getattr(session, name)
    if name == "run_connector":
        from connectors.runner import run_connector

        return run_connector
    if name == "browse_server":
        from connectors.browse import browse_server

        return browse_server
    raise AttributeError(name)
