"""Encode a query (text, image or both) into a search direction and what re-ranking needs."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vtsearch.errors import ImageTooLargeError, NotAnImageError, QueryError
from vtsearch.models.base import Embedder, TextEmbedding
from vtsearch.search.parse import parse_query
from vtsearch.search.retrieve import combine


@dataclass
class EncodedQuery:
    #: The unit search direction: weighted terms and the image, combined.
    vector: np.ndarray
    #: Token states of the strongest positive term, for re-ranking images (None: image only).
    text: TextEmbedding | None
    #: Raw region tokens ``[1, N, C]`` of the query image, for re-ranking texts.
    image_tokens: torch.Tensor | None
    #: The strongest positive term as typed, for re-rankers that read text, not states.
    main_text: str | None = None


#: One uploaded image decodes at a time (see ``read_image``).
_UPLOAD_DECODE = threading.Lock()
#: What a query image may be: a file, a decoded image, or the bytes of an image file (an upload).
QueryImage = str | Path | Image.Image | bytes


def read_image(image: QueryImage) -> Image.Image:
    """A query image as RGB. The bytes of an upload are decoded only by the photo formats
    vtsearch indexes (``QUERY_FORMATS``); the decompression-bomb guard applies to all.

    Raises:
        ImageTooLargeError: it would decode to more pixels than the bomb guard allows.
        NotAnImageError: it cannot be read or decoded.
    """
    from vtsearch.images import (
        DECODE_TARGET,
        MAX_QUERY_PIXELS,
        QUERY_FORMATS,
        DecompressionBomb,
        describe_error,
        load_image,
    )

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    uploaded = isinstance(image, bytes | bytearray)
    name = "the uploaded image" if uploaded else f"query image {image}"
    try:
        if uploaded:
            # Uploads decode one at a time, under a lower pixel limit: each may hold hundreds of
            # megabytes while it decodes, and a server takes many at once.
            with _UPLOAD_DECODE:
                data = io.BytesIO(image)
                return load_image(data, DECODE_TARGET, QUERY_FORMATS, MAX_QUERY_PIXELS).image
        return load_image(str(Path(image).expanduser()), DECODE_TARGET).image
    except (DecompressionBomb, Image.DecompressionBombError) as e:
        raise ImageTooLargeError(f"cannot read {name}: {describe_error(e)}") from e
    except Exception as e:
        raise NotAnImageError(f"cannot read {name}: {describe_error(e)}") from e


def try_read_image(path: str) -> Image.Image | None:
    """A candidate's image, or None when its file can no longer be read (moved since indexing)."""
    try:
        return read_image(path)
    except QueryError:
        return None


_threads_lock = threading.Lock()
#: How many calls are inside :func:`one_torch_thread`, over all threads, and how deep each
#: thread is (nested calls on one thread).
_threads_inside = 0
_threads_depth = threading.local()
#: Torch's thread count when the first call came in: what every thread goes back to.
_threads_saved = 1


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One query is a handful of small tensors: a second intra-op thread buys nothing and, on a
    loaded machine, costs a lot (14 ms against 509 ms for a text encode measured at load 8).
    Also a decorator (``@one_torch_thread()``).

    Safe from many threads at once (a server shares one Engine): torch keeps the count per
    thread, and a thread started later takes the count last set anywhere, so a plain save and
    restore per call, interleaved, could leave new threads on 1 for good. Here the first call in
    saves the count, each thread sets its own to 1 on its way in and back to the saved count on
    its way out, all under one lock, so when the last one is out every thread and every new
    thread have the saved count again.
    """
    global _threads_inside, _threads_saved
    with _threads_lock:
        if _threads_inside == 0:
            _threads_saved = torch.get_num_threads()
        _threads_inside += 1
        depth = getattr(_threads_depth, "n", 0)
        _threads_depth.n = depth + 1
        if depth == 0:
            torch.set_num_threads(1)
    try:
        yield
    finally:
        with _threads_lock:
            _threads_inside -= 1
            _threads_depth.n -= 1
            if _threads_depth.n == 0:
                torch.set_num_threads(_threads_saved)


def encode_query(
    embedder: Embedder,
    text: str | None,
    image: QueryImage | None,
    image_vector: np.ndarray | None = None,
    captions: bool = False,
) -> EncodedQuery:
    """The query's search direction and what re-ranking needs; ``image_vector`` is an indexed
    image's stored vector, standing for a query image (its region tokens are not given);
    ``captions``: embed the text as a caption whatever it reads as (a query over the stored
    texts, which are captions)."""
    with one_torch_thread():
        return _encode_query(embedder, text, image, image_vector, captions)


def _encode_query(
    embedder: Embedder,
    text: str | None,
    image: QueryImage | None,
    image_vector: np.ndarray | None,
    captions: bool = False,
) -> EncodedQuery:
    if text is None and image is None and image_vector is None:
        raise QueryError("give a text query, an image, or both")
    parts, weights = [], []
    main_text = image_tokens = main_term = None
    if text is not None:
        parsed = parse_query(text)
        if captions:
            emb = embedder.encode_as(parsed.texts, label=False)
        else:
            emb = embedder.encode_texts(parsed.texts)
        parts.append(emb.vectors.float().cpu().numpy())
        weights += parsed.weights
        best = int(np.argmax(parsed.weights))
        main_term = parsed.texts[best]
        main_text = TextEmbedding(
            emb.vectors[best : best + 1], emb.states[best : best + 1], emb.mask[best : best + 1]
        )
    if image is not None:
        pixels = embedder.transform(read_image(image))[None].to(embedder.device)
        img = embedder.encode_images(pixels)
        parts.append(img.vectors.float().cpu().numpy())
        weights.append(1.0)
        image_tokens = img.tokens
    if image_vector is not None:
        parts.append(np.asarray(image_vector, dtype=np.float32)[None])
        weights.append(1.0)
    stacked = np.concatenate(parts)
    if _cancels_out(stacked, weights):
        raise QueryError(
            f"the terms of {text!r} cancel out (what is added is also subtracted), so there is "
            "nothing left to look for; subtract something different from what you look for"
        )
    vector = combine(stacked, weights)
    return EncodedQuery(vector, main_text, image_tokens, main_term)


#: A weighted sum of unit vectors shorter than this share of the weights' total is numerical
#: noise, not a direction: float32 rounding alone leaves about 1e-7.
CANCEL_TOLERANCE = 1e-4


def _cancels_out(vectors: np.ndarray, weights: list[float]) -> bool:
    """Whether the weighted terms sum to (almost) the zero vector, e.g. "a cat - a cat"."""
    w = np.asarray(weights, dtype=np.float64)
    total = float(np.linalg.norm((w[:, None] * vectors.astype(np.float64)).sum(0)))
    return total <= CANCEL_TOLERANCE * float(np.abs(w).sum())
