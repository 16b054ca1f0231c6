"""The public API: ``Engine``, one collection searchable by text or by image."""

from vtsearch.api.engine import Engine

__all__ = ["Engine"]
