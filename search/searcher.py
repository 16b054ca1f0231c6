"""The query path over one collection: encode the query, retrieve candidates, re-rank them.

``Engine.search`` and ``Engine.search_texts`` call into a :class:`Searcher`; it holds what
queries share (the query-bank priors of images already seen) and is safe to use from many
threads: the vector indexes lock themselves, and the priors memo is only ever read or extended.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vtsearch.errors import QueryError
from vtsearch.search.results import Result, TextResult

if TYPE_CHECKING:
    from PIL import Image

    from vtsearch.models.base import Embedder
    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.rerank import FusionReranker
    from vtsearch.storage.catalog import Catalog
    from vtsearch.storage.vectors import VectorIndex

#: Memoised image priors kept before the memo starts over (about 100 bytes each).
PRIOR_MEMO_MAX = 200_000


class Searcher:
    """Searches of one collection folder with one model.

    Args:
        folder: the collection folder (its token cache is read from there).
        catalog: the collection's catalog.
        embedder: the collection's model.
        reranker: returns the re-ranker to use (loaded on first call), or None.
        images: returns the image index, caught up with the catalog.
        texts: returns the text index, caught up with the catalog.
    """

    def __init__(
        self,
        folder: Path,
        catalog: Catalog,
        embedder: Embedder,
        reranker: Callable[[], FusionReranker | BlipReranker | None],
        images: Callable[[], VectorIndex],
        texts: Callable[[], VectorIndex],
    ) -> None:
        self.folder, self.catalog, self.embedder = folder, catalog, embedder
        self._reranker, self._images, self._texts = reranker, images, texts
        self._prior_memo: dict[int, float] = {}

    def images(
        self,
        text: str | None,
        image: str | Path | Image.Image | None,
        k: int,
        rerank: bool,
        rerank_k: int | None,
    ) -> list[Result]:
        """Images ranked by similarity to a text, an example image, or both (see Engine.search)."""
        from vtsearch.search.blip import BlipReranker
        from vtsearch.search.query import encode_query, try_read_image
        from vtsearch.search.retrieve import apply_rerank, retrieve_rows

        check_k(k)
        q = encode_query(self.embedder, text, image)
        reranker = self._reranker() if rerank and q.text is not None else None
        depth = max(k, rerank_k or (reranker.default_k if reranker else k))
        hits, rows = retrieve_rows(q.vector, self._images(), self.catalog, depth)
        if reranker is None or not hits:
            return hits[:k]
        ids = [h.id for h in hits]
        if isinstance(reranker, BlipReranker):
            images = [try_read_image(h.path) for h in hits]
            return apply_rerank(hits, reranker.score_images(q.main_text, images), 1.0, k)
        fusion = None
        if reranker.mix["t2i"]:
            fusion = reranker.score_images(q.text, self.region_tokens(reranker, ids))
        priors = self._priors(reranker, ids, rows)
        return apply_rerank(hits, fusion, reranker.mix["t2i"], k, priors)

    def texts(
        self,
        image: str | Path | Image.Image | None,
        text: str | None,
        k: int,
        rerank: bool,
        rerank_k: int | None,
    ) -> list[TextResult]:
        """The collection's texts ranked by similarity to an image, a text, or both."""
        from vtsearch.search.blip import BlipReranker
        from vtsearch.search.query import encode_query, read_image
        from vtsearch.search.retrieve import apply_rerank, rescore, rescored, search_depth

        check_k(k)
        q = encode_query(self.embedder, text, image)
        tindex = self._texts()
        if len(tindex) == 0:
            raise QueryError("the collection has no texts; add some with: vtsearch texts add FILE")
        reranker = self._reranker() if rerank and q.image_tokens is not None else None
        depth = max(k, rerank_k or (reranker.default_k if reranker else k))
        scores, ids = tindex.search(q.vector[None, :], search_depth(tindex, depth))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        # One read of the rows: with their vectors when they re-score the candidates or feed the
        # fusion scorer's prior.
        fusion_prior = reranker is not None and not isinstance(reranker, BlipReranker)
        rows = self.catalog.texts((i for i, _ in found), vectors=rescored(tindex) or fusion_prior)
        if rescored(tindex):
            found = rescore(found, {i: r.vector for i, r in rows.items()}, q.vector, depth)
        hits = [
            TextResult(i, rows[i].text, s, rows[i].source, bi_score=s)
            for i, s in found
            if i in rows
        ]
        if reranker is None or not hits:
            return hits[:k]
        if isinstance(reranker, BlipReranker):
            fusion = reranker.score_texts(read_image(image), [h.text for h in hits])
            return apply_rerank(hits, fusion, 1.0, k)
        prior = reranker.prior("i2t", np.stack([rows[h.id].vector for h in hits]))
        fusion = None
        if reranker.mix["i2t"]:  # 0: this direction re-ranks by the prior alone
            states = self.embedder.encode_texts([h.text for h in hits])
            fusion = reranker.score_texts(reranker.reduce(q.image_tokens), states)
        return apply_rerank(hits, fusion, reranker.mix["i2t"], k, prior)

    def _priors(self, reranker: FusionReranker, ids: list[int], rows: dict) -> np.ndarray:
        """Query-bank priors of images, memoised: a row id always names the same vector (a
        changed file gets a new id), and hubs come back in query after query. ``rows``: the
        catalog rows the search read, which carry the vectors of the ids not memoised yet."""
        if len(self._prior_memo) > PRIOR_MEMO_MAX:
            self._prior_memo.clear()
        todo = [i for i in ids if i not in self._prior_memo]
        if todo:
            todo = [i for i in todo if i in rows and rows[i].vector]
            if todo:
                vecs = np.stack([np.frombuffer(rows[i].vector, dtype=np.float32) for i in todo])
                priors = reranker.prior("t2i", vecs).tolist()
                self._prior_memo.update(zip(todo, priors, strict=True))
        return np.array([self._prior_memo.get(i, 0.0) for i in ids], dtype=np.float32)

    def region_tokens(self, reranker: FusionReranker, ids: list[int]) -> np.ndarray:
        """Cached region tokens of ``ids``; images without them are decoded and encoded again."""
        import torch

        from vtsearch.search.query import try_read_image
        from vtsearch.search.rerank import open_token_cache

        cache = open_token_cache(self.folder, reranker)
        got = cache.get(np.array(ids)) if cache is not None else [None] * len(ids)
        missing = [i for i, t in zip(ids, got, strict=True) if t is None]
        if missing:
            rows = self.catalog.rows(missing)
            images = {i: try_read_image(rows[i].path) for i in missing if i in rows}
            # A row deleted or a file gone since the search: neutral (zero) tokens, no error.
            readable = [i for i in missing if images.get(i) is not None]
            blank = np.zeros(reranker.token_shape, dtype=np.float32)
            by_id = dict.fromkeys(missing, blank)
            if readable:
                emb = self.embedder
                pixels = torch.stack([emb.transform(images[i]) for i in readable])
                fresh = reranker.reduce(emb.encode_images(pixels.to(emb.device)).tokens)
                by_id.update(zip(readable, fresh, strict=True))
            got = [t if t is not None else by_id[i] for i, t in zip(ids, got, strict=True)]
        return np.stack(got).astype(np.float32)


def check_k(k: int) -> None:
    if k < 1:
        raise QueryError(f"k must be at least 1, not {k}")
