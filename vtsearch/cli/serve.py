"""`vtsearch serve`: the HTTP API and the web page over the collection."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import click

from vtsearch.cli.common import engine


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port."
)
@click.option(
    "--token",
    envvar="VTSEARCH_TOKEN",
    default=None,
    help="Every request must carry this token (needed with any --host but this machine's own; "
    "default $VTSEARCH_TOKEN).",
)
@click.option(
    "--folder",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Folder the page's re-index button indexes (default: none, no re-indexing).",
)
@click.option(
    "--cors",
    metavar="ORIGIN",
    default=None,
    help="Let pages of this origin call the API (default: only the server's own page).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    token: str | None,
    folder: Path | None,
    cors: str | None,
) -> None:
    """Serve the search page and its HTTP API (docs at /docs) on this machine.

    Listens on 127.0.0.1 only, unless --host says otherwise; then a --token is required, and
    the browser signs in once with http://HOST:PORT/?token=TOKEN.

    \b
    Example:
      vtsearch serve                           # http://127.0.0.1:8765/
      vtsearch --db ./my-index serve --folder ~/Pictures --port 9000
      VTSEARCH_TOKEN=s3cret vtsearch serve --host 0.0.0.0
    """
    token = token or None
    if not is_loopback(host) and token is None:
        raise click.UsageError(
            f"--host {host} lets other machines reach the server; give it a --token (or set "
            "VTSEARCH_TOKEN) so only those who know it can search, or keep the default "
            "--host 127.0.0.1"
        )
    import uvicorn

    from vtsearch.server.app import create_app

    eng = engine(ctx)
    # Without a token, only this machine's own names are answered (no DNS rebinding).
    hosts = None if token else frozenset({"127.0.0.1", "localhost", "::1", host.strip("[]")})
    app = create_app(eng, token=token, folder=folder, cors=cors, warm=True, hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + ("?token=TOKEN" if token else "")
    click.echo(f"vtsearch: serving {eng.path} at {url} (Ctrl-C stops)", err=True)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    finally:
        eng.close()
