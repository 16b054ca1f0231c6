"""Why an image scores for a text: the fusion scorer's attention, word by word.

The scorer (:class:`~vtsearch.models.fusion.FusionScorer`) lets every token of the text attend
over the image's 7x7 regions and scores the pair as ``gain * sum(weight * match)``: a token's
``weight`` is its learned share of the score (function words count little), its ``match`` how
well what it attended to matches it. Tokens are the text model's WordPiece pieces; pieces of one
word ("skate", "##board") are joined back into that word, which weighs their sum, matches as
their weighted mean and looks where they look, weighted alike, so the score still adds up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vtsearch.models.base import Embedder
from vtsearch.models.fusion import FusionExplanation, content_words
from vtsearch.search.parse import parse_query
from vtsearch.search.query import one_torch_thread
from vtsearch.search.rerank import FusionReranker


@dataclass
class WordExplanation:
    word: str
    #: Its share of the score; the words' shares sum to 1.
    weight: float
    #: Cosine of the word and what it found in the image.
    match: float
    #: ``grid x grid``: where it looked (sums to 1), rows top to bottom.
    attention: list[list[float]]


@dataclass
class Explanation:
    """How the fusion scorer read one image for one text (``Engine.explain``)."""

    id: int
    #: The text as given.
    query: str
    #: The term explained: the text's strongest positive term (the one re-ranking scores).
    term: str
    #: Rows and columns of the region grid; it covers the image's centred square (the model's
    #: centre crop).
    grid: tuple[int, int]
    words: list[WordExplanation]
    #: ``grid x grid``: where the whole term looked, the words' attention weighted by their share.
    attention: list[list[float]]
    #: What the grid covers, as fractions of the image's width and height: ``(left, top, right,
    #: bottom)``.
    area: tuple[float, float, float, float]
    #: The fusion logit: ``gain * sum(weight * match)``.
    score: float
    gain: float


def word_groups(tokens: list[str], content: list[bool]) -> list[tuple[str, list[int]]]:
    """Content tokens joined into words: a "##" piece continues the word before it.

    Example:
        >>> word_groups(["[CLS]", "a", "skate", "##board", "[SEP]"], [False, True, True, True,
        ...                                                       False])
        [('a', [1]), ('skateboard', [2, 3])]
    """
    groups: list[tuple[str, list[int]]] = []
    for i, (tok, keep) in enumerate(zip(tokens, content, strict=True)):
        if not keep:
            continue
        if tok.startswith("##") and groups and groups[-1][1][-1] == i - 1:
            word, idx = groups[-1]
            groups[-1] = (word + tok[2:], [*idx, i])
        else:
            groups.append((tok, [i]))
    return groups


def _grid(attention: np.ndarray, grid: int) -> list[list[float]]:
    return attention.reshape(grid, grid).astype(float).tolist()


@one_torch_thread()
def explain(
    embedder: Embedder,
    reranker: FusionReranker,
    text: str,
    image_id: int,
    regions: np.ndarray,
    size: tuple[int | None, int | None] = (None, None),
) -> Explanation:
    """Explain the fusion score of ``text``'s strongest positive term for the image whose region
    tokens (as the token cache stores them, ``[N, C]``) are ``regions``; ``size``: the image's
    width and height, for the area the grid covers."""
    term = max(parse_query(text).terms, key=lambda t: t.weight).text
    tokens = embedder.text_tokens(term)
    emb = embedder.encode_as([term], label=False)  # its token states only
    states, mask = emb.states[:1].float().cpu(), emb.mask[:1].cpu()
    if len(tokens) != states.shape[1]:  # padding never applies to one text; a guard all the same
        tokens = (tokens + ["[PAD]"] * states.shape[1])[: states.shape[1]]
    ex: FusionExplanation = reranker.scorer.explain(
        states, mask, torch.from_numpy(np.ascontiguousarray(regions[None], dtype=np.float32))
    )
    attn, weights, match = ex.attention.numpy(), ex.weights.numpy(), ex.match.numpy()
    grid = reranker.scorer.config.grid
    words = []
    for word, idx in word_groups(tokens, content_words(mask.bool())[0].tolist()):
        w = weights[idx]
        share = float(w.sum())
        mix = w / share if share > 0 else np.full(len(idx), 1.0 / len(idx))
        words.append(
            WordExplanation(
                word,
                share,
                float(mix @ match[idx]),
                _grid(mix @ attn[idx], grid),
            )
        )
    whole = weights @ attn / max(float(weights.sum()), 1e-12)
    return Explanation(
        image_id,
        text,
        term,
        (grid, grid),
        words,
        _grid(whole, grid),
        centre_square(*size),
        ex.score,
        ex.gain,
    )


def centre_square(width: int | None, height: int | None) -> tuple[float, float, float, float]:
    """The centred square a model that resizes the short side and crops the centre sees, as
    fractions ``(left, top, right, bottom)`` of the image.

    Example:
        >>> centre_square(400, 200)
        (0.25, 0.0, 0.75, 1.0)
    """
    if not width or not height:
        return (0.0, 0.0, 1.0, 1.0)
    side = min(width, height)
    dx, dy = (width - side) / 2 / width, (height - side) / 2 / height
    return (dx, dy, 1.0 - dx, 1.0 - dy)
