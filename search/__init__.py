"""Turn a query into ranked results: parse, embed, retrieve, look up."""

from vtsearch.search.parse import ParsedQuery, Term, parse_query
from vtsearch.search.results import Result

__all__ = ["ParsedQuery", "Result", "Term", "parse_query"]
