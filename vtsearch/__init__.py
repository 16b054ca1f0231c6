"""vtsearch: local-first image-text search.

Example:
    >>> from vtsearch import Engine
    >>> eng = Engine("/tmp/coll")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vtsearch.errors import VtsearchError

__version__ = "0.1.0"
__all__ = ["Engine", "Filters", "Result", "VtsearchError"]

if TYPE_CHECKING:
    from vtsearch.api import Engine
    from vtsearch.search.results import Result
    from vtsearch.storage.filters import Filters


def __getattr__(name: str):
    if name == "Engine":
        from vtsearch.api import Engine

        return Engine
    if name == "Filters":
        from vtsearch.storage.filters import Filters

        return Filters
    if name == "Result":
        from vtsearch.search.results import Result

        return Result
    raise AttributeError(name)
