"""The `vtsearch` command line; nothing else imports it."""

from vtsearch.cli.main import main

__all__ = ["main"]
