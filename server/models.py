"""The JSON the HTTP API answers with, as typed pydantic models (FastAPI checks every answer
against them and publishes them at ``/docs``)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel


def clean(text: str) -> str:
    """``text`` as valid UTF-8: a file name that is not (held by Python with lone surrogates)
    shows replacement characters instead of failing the response."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def finite(x: float | None) -> float | None:
    """A score as JSON carries it: a value that is not a finite number becomes null."""
    return x if x is not None and math.isfinite(x) else None


class Error(BaseModel):
    error: str


class Root(BaseModel):
    path: str
    exists: bool
    images: int


class Status(BaseModel):
    path: str
    model_id: str | None
    index_kind: str | None
    indexed: int
    failed: int
    texts: int
    readonly: bool
    roots: list[Root]
    #: The model has a fusion scorer: /api/explain works.
    fusion: bool
    #: The server was given a --folder and may write the collection: POST /api/index works.
    can_index: bool


class Result(BaseModel):
    id: int
    #: Relative to ``root``, "/"-separated.
    path: str
    #: The indexed folder holding the file.
    root: str | None
    score: float | None
    bi_score: float | None
    rerank_score: float | None
    prior: float | None
    width: int | None
    height: int | None
    #: ISO 8601 (EXIF time, no zone), or null.
    taken_at: str | None
    #: URL of the thumbnail (JPEG, longest side 256).
    thumb: str
    #: URL of the original file.
    file: str


class SearchResults(BaseModel):
    query: str | None
    k: int
    offset: int
    results: list[Result]
    has_more: bool


class Image(Result):
    format: str | None
    #: Size of the file when it was indexed.
    bytes: int
    name: str
    #: Zero-shot tags (``vtsearch tag``), most likely first.
    tags: list[str]


class TagCount(BaseModel):
    tag: str
    #: How many images have it.
    images: int


class Tags(BaseModel):
    tags: list[TagCount]


class TextHit(BaseModel):
    id: int
    text: str
    score: float | None
    source: str | None
    bi_score: float | None
    rerank_score: float | None
    prior: float | None


class TextResults(BaseModel):
    results: list[TextHit]


class Word(BaseModel):
    word: str
    #: Its share of the score (the scorer's pooling weight); the words' shares sum to 1.
    weight: float
    #: How well what it found in the image matches it (cosine).
    match: float
    #: ``grid`` rows of ``grid`` columns, top to bottom: where it looked (sums to 1).
    attention: list[list[float]]


class Explanation(BaseModel):
    id: int
    query: str
    #: The term explained: the query's strongest positive term (the one re-ranking scores).
    term: str
    grid: tuple[int, int]
    words: list[Word]
    #: The whole term's attention: the words' attention weighted by their share.
    attention: list[list[float]]
    #: The part of the image the grid covers, as fractions of its width and height:
    #: ``[left, top, right, bottom]`` (the model's centred square).
    area: tuple[float, float, float, float]
    #: The fusion logit, ``gain * sum(weight * match)``.
    score: float
    gain: float


class IndexState(BaseModel):
    state: Literal["idle", "running", "done", "failed"]
    #: The folder the server indexes (``--folder``), or null.
    folder: str | None
    done: int
    total: int
    phase: Literal["reading", "embedding"] | None
    report: dict | None
    error: str | None
