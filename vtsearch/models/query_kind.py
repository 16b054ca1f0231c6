"""Whether a text reads as a label ("pasta", "a photo of a tulip", "long-sleeve shirt") or as a
caption ("a dog runs along the beach"). vtsearch-lite scores the two differently: its caption
heads were trained on Flickr8k sentences, while a label is best matched by its concept branch.

A label is a short noun phrase: after a leading "a photo of" (picture, image, close-up...) and
the articles, at most ``MAX_LABEL_WORDS`` words, none of them a form of "to be" or "to have" or a
word that joins two things ("on", "with", "and").
"""

from __future__ import annotations

import re

MAX_LABEL_WORDS = 3
_LEAD = re.compile(
    r"^\s*(?:(?:a|an|the|my|our)\s+)?(?:(?:good|bad|close-up|bright|dark|cropped|small|large|"
    r"blurry)\s+)?(?:photo|picture|image|pic|snapshot|shot)s?\s+of\s+",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_ARTICLES = {"a", "an", "the", "some", "my", "our", "his", "her", "their", "its"}
#: Words that make a phrase a sentence or a scene of several things, not one concept.
_JOINERS = {
    "is", "are", "was", "were", "be", "being", "has", "have", "does", "do",
    "on", "in", "at", "with", "by", "near", "under", "over", "into", "onto", "through", "while",
    "and", "or", "from", "to", "behind", "beside", "next", "across", "along", "around",
}  # fmt: skip


def label_words(text: str) -> list[str]:
    """The words of ``text`` after a leading "a photo of" and the articles, lower case."""
    words = [w.lower() for w in _WORD.findall(_LEAD.sub("", text))]
    return [w for w in words if w not in _ARTICLES]


def is_label(text: str) -> bool:
    """Whether ``text`` reads as a label (see the module's doc).

    Example:
        >>> [is_label(t) for t in ("a photo of a tulip", "baby back ribs", "A dog runs .")]
        [True, True, False]
    """
    words = label_words(text)
    if not words or len(words) > MAX_LABEL_WORDS:
        return False
    return not any(w in _JOINERS for w in words)


def all_known(text: str, known: frozenset[str]) -> bool:
    """Whether every word of ``text`` (or its singular or plural) is in ``known``.

    Example:
        >>> all_known("a photo of dogs", frozenset({"dog"})), all_known("a tulip", frozenset())
        (True, False)
    """
    words = label_words(text)
    return bool(words) and all(
        w in known or w + "s" in known or (w.endswith("s") and w[:-1] in known) for w in words
    )
