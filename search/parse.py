"""Query syntax: plain words, plus weighted terms to add or subtract.

``"a dog on a beach - people + sunset^0.5"`` means: a dog on a beach, away from people, a little
towards sunset. Terms are separated by `` + `` or `` - `` with spaces around them, so hyphenated
words stay whole; ``^w`` at the end of a term sets its weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vtsearch.errors import QueryError

_SPLIT = re.compile(r"\s+([+-])\s+")
_WEIGHT = re.compile(r"^(.*?)\s*\^\s*(\d+(?:\.\d*)?|\.\d+)$", re.DOTALL)


@dataclass(frozen=True)
class Term:
    text: str
    weight: float


@dataclass(frozen=True)
class ParsedQuery:
    terms: tuple[Term, ...]

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.terms]

    @property
    def weights(self) -> list[float]:
        return [t.weight for t in self.terms]


def parse_query(text: str) -> ParsedQuery:
    """Split a query into signed, weighted terms.

    Example:
        >>> [(t.text, t.weight) for t in parse_query("a dog - people + sunset^0.5").terms]
        [('a dog', 1.0), ('people', -1.0), ('sunset', 0.5)]
    """
    stripped = (text or "").strip()
    if not stripped:
        raise QueryError('the query is empty; give some words, e.g. vtsearch query "a red car"')
    parts = _SPLIT.split(" " + stripped)
    # re.split with one group yields [first, sign, term, sign, term, ...]
    signed = [("+", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]
    terms = []
    for sign, raw in signed:
        body, weight = raw.strip(), 1.0
        m = _WEIGHT.match(body)
        if m:
            body, weight = m.group(1).strip(), float(m.group(2))
            if not body:
                raise QueryError(
                    f"the term {raw.strip()!r} has a weight but no words; put the words before "
                    'the ^, e.g. "a beach + sunset^0.5"'
                )
        if body:  # an empty body without a weight: a leading sign, as in "- people"
            terms.append(Term(body, -weight if sign == "-" else weight))
    if not any(t.weight > 0 for t in terms):
        raise QueryError(_nothing_to_look_for(text, terms))
    return ParsedQuery(tuple(terms))


def _nothing_to_look_for(text: str, terms: list[Term]) -> str:
    """Why a query with no positive term cannot run, in the words of its case."""
    if not terms:
        return f'the query {text!r} has no words to look for; e.g. vtsearch query "a red car"'
    zero = next((t for t in terms if t.weight == 0), None)
    if zero is not None:
        return (
            f"the term {zero.text + '^0'!r} has weight 0, so it counts for nothing; give it a "
            f"weight above 0 (e.g. {zero.text}^0.5) or leave out the ^0"
        )
    return (
        f"the query {text!r} only subtracts terms and has nothing to look for; start with what "
        'you want, e.g. "a beach - people"'
    )
