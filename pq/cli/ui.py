"""``pq ui``: serve the operator and engineer web UI.

Served by waitress, a production WSGI server. Debug mode (tracebacks in the browser, werkzeug's
development server) is off unless ``--debug`` or ``PQ_UI_DEBUG=true`` asks for it.
"""

from __future__ import annotations

import logging

import click

__all__ = ["ui", "serve"]

logger = logging.getLogger(__name__)


def serve(app, host: str, port: int, *, debug: bool, threads: int) -> None:
    """Run ``app`` until interrupted."""
    if not debug:
        import waitress

        logger.info("serving the UI with waitress on http://%s:%d (%d threads)", host, port, threads)
        waitress.serve(app.server, host=host, port=port, threads=threads, ident="pq")
        return
    from werkzeug.serving import run_simple

    logger.warning("serving the UI in DEBUG mode on http://%s:%d: not for a plant network", host, port)
    run_simple(host, port, app.server, threaded=True, use_reloader=False, use_debugger=debug)


@click.command()
@click.option("--host", default=None, help="Address to listen on [PQ_UI_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [PQ_UI_PORT, default 8050].")
@click.option("--debug", is_flag=True, default=None, help="Dash debug mode: tracebacks in the browser. Never on a plant network.")
def ui(host: str | None, port: int | None, debug: bool | None):
    """Serve the operator and engineer web UI (login required; users via `pq users`)."""
    from pq.auth.users import list_users
    from pq.cli import get_settings, open_store
    from ui.app import create_app

    settings = get_settings()
    if debug:
        settings = settings.model_copy(update={"ui_debug": True})
    store = open_store()
    if not list_users(store):
        click.echo("no UI users yet: create one with `pq users add NAME --role admin`", err=True)
    app = create_app(settings, store)
    if settings.ui_debug:
        app.enable_dev_tools(debug=True, dev_tools_hot_reload=False)
    host = host or settings.ui_host
    port = port or settings.ui_port
    click.echo(f"pq UI on http://{host}:{port}/ (store {store.display_url})", err=True)
    serve(app, host, port, debug=settings.ui_debug, threads=settings.ui_threads)
