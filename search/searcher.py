"""The query path over one collection: encode the query, retrieve candidates, re-rank them.

``Engine.search`` and ``Engine.search_texts`` call into a :class:`Searcher`; it holds what
queries share (the query-bank priors of images already seen) and is safe to use from many
threads: the vector indexes lock themselves, and the priors memo is only read, extended, or
cleared when it grows too large (each a single dict operation).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vtsearch.errors import ImageNotFoundError, NoScorerError, NoTextsError, QueryError
from vtsearch.search.results import Result, TextResult
from vtsearch.storage.records import root_of

if TYPE_CHECKING:
    from vtsearch.models.base import Embedder
    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.explain import Explanation
    from vtsearch.search.query import QueryImage
    from vtsearch.search.rerank import FusionReranker
    from vtsearch.storage.catalog import Catalog
    from vtsearch.storage.filters import Filters
    from vtsearch.storage.vectors import VectorIndex

#: Memoised image priors kept before the memo starts over (about 100 bytes each).
PRIOR_MEMO_MAX = 200_000
#: Id sets of recent filters kept (a page of results, the next query with the same filters
#: reuse them: a date filter passing half of 100k rows takes the catalog about 30 ms).
MATCHING_MEMO_MAX = 8


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
        self._matching_memo: dict[tuple, np.ndarray] = {}

    def images(
        self,
        text: str | None,
        image: QueryImage | None,
        k: int,
        rerank: bool,
        rerank_k: int | None,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> list[Result]:
        """Images ranked by similarity to a text, an example image, or both (see Engine.search).

        The ranking is one list whatever ``k`` and ``offset`` cut from it, so pages never
        overlap: the re-ranker re-orders the bi-encoder's top ``rerank_k`` (its own depth by
        default) and the rest follow in bi-encoder order. With ``filters``, only the images
        they let through are searched (and re-ranked), and ``min_score`` cuts the final list.
        """
        from vtsearch.search.blip import BlipReranker
        from vtsearch.search.query import encode_query, try_read_image
        from vtsearch.search.retrieve import apply_rerank, retrieve_rows

        check_k(k, offset)
        q = encode_query(self.embedder, text, image)
        reranker = self._reranker() if rerank and q.text is not None else None
        window = (rerank_k or reranker.default_k) if reranker is not None else 0
        vindex, among = self._images(), self._matching(filters)
        depth = max(offset + k, window)
        hits, rows = retrieve_rows(q.vector, vindex, self.catalog, depth, among)
        head, tail = hits[:window], hits[window:]
        if head:
            ids = [h.id for h in head]
            if isinstance(reranker, BlipReranker):
                images = [try_read_image(h.path) for h in head]
                head = apply_rerank(head, reranker.score_images(q.main_text, images), 1.0, window)
            else:
                fusion = None
                if reranker.mix["t2i"]:
                    fusion = reranker.score_images(q.text, self.region_tokens(reranker, ids))
                priors = self._priors(reranker, ids, rows)
                head = apply_rerank(head, fusion, reranker.mix["t2i"], window, priors)
        ranked = at_least(head + tail, filters)
        return self._with_roots(ranked[offset : offset + k])

    def similar(
        self, image_id: int, k: int, offset: int = 0, filters: Filters | None = None
    ) -> list[Result]:
        """Images like an indexed one ("more like this"): its stored vector is the query, and
        the image itself is left out (see Engine.similar); ``filters`` as for :meth:`images`."""
        from vtsearch.search.gallery import indexed_row
        from vtsearch.search.retrieve import retrieve_rows

        check_k(k, offset)
        row = indexed_row(self.catalog, image_id)
        vector = np.frombuffer(row.vector, dtype=np.float32)
        vindex, among = self._images(), self._matching(filters)
        hits, _ = retrieve_rows(vector, vindex, self.catalog, offset + k + 1, among)
        hits = at_least([h for h in hits if h.id != image_id], filters)
        return self._with_roots(hits[offset : offset + k])

    def _matching(self, filters: Filters | None) -> np.ndarray | None:
        """The ids ``filters`` lets a search return, or None when it lets every image through;
        memoised until the catalog changes (or, for folders inside every indexed folder, its
        folders do)."""
        if filters is None or not filters.restricts:
            return None
        key: tuple = (filters, self.catalog.head())
        if any(not os.path.isabs(f) for f in filters.folders):
            key += (tuple(self.catalog.roots()),)
        if filters.tags:  # tagging writes no vectors, so it moves no sequence number
            key += (self.catalog.tags_version(),)
        ids = self._matching_memo.get(key)
        if ids is None:
            ids = self.catalog.matching_ids(filters)
            if len(self._matching_memo) >= MATCHING_MEMO_MAX:
                self._matching_memo.clear()
            self._matching_memo[key] = ids
        return ids

    def explain(self, text: str, image_id: int) -> Explanation:
        """The fusion scorer's reading of an indexed image for ``text`` (see Engine.explain)."""
        from vtsearch.search.explain import explain
        from vtsearch.search.gallery import indexed_row, safe_file
        from vtsearch.search.query import one_torch_thread, read_image
        from vtsearch.search.rerank import FusionReranker, open_token_cache

        reranker = self._reranker()
        if not isinstance(reranker, FusionReranker):
            raise NoScorerError(
                f"model '{self.embedder.model_id}' with this re-ranker has no fusion scorer to "
                "explain a match with (vtsearch-lite ships one; not with --reranker none or blip)"
            )
        row = indexed_row(self.catalog, image_id)
        cache = open_token_cache(self.folder, reranker)
        regions = cache.get(np.array([image_id]))[0] if cache is not None else None
        if regions is None:  # not cached: encoded again from the file
            import torch

            try:
                image = read_image(safe_file(self.catalog, row))
            except QueryError as e:
                raise ImageNotFoundError(f"image {image_id}: {e}") from e
            pixels = self.embedder.transform(image)[None]
            with one_torch_thread(), torch.inference_mode():
                raw = self.embedder.encode_images(pixels.to(self.embedder.device)).tokens
            regions = reranker.reduce(raw)[0]
        size = (row.width, row.height)
        return explain(self.embedder, reranker, text, image_id, regions, size)

    def _with_roots(self, results: list[Result]) -> list[Result]:
        """``results`` with the indexed folder of each file set."""
        if results:
            roots = self.catalog.roots()
            for r in results:
                r.root = root_of(r.path, roots)
        return results

    def texts(
        self,
        image: QueryImage | None,
        text: str | None,
        k: int,
        rerank: bool,
        rerank_k: int | None,
        image_id: int | None = None,
    ) -> list[TextResult]:
        """The collection's texts ranked by similarity to an image (a file, or an indexed image
        by ``image_id``), a text, or both."""
        from vtsearch.search.blip import BlipReranker
        from vtsearch.search.gallery import indexed_row, safe_file
        from vtsearch.search.query import encode_query, read_image
        from vtsearch.search.retrieve import apply_rerank, rescore, rescored, search_depth

        check_k(k)
        stored = None
        if image_id is not None:
            if image is not None:
                raise QueryError("give a query image or the id of an indexed one, not both")
            row = indexed_row(self.catalog, image_id)
            stored = np.frombuffer(row.vector, dtype=np.float32)
        q = encode_query(self.embedder, text, image, stored, captions=True)
        tindex = self._texts()
        if len(tindex) == 0:
            raise NoTextsError(
                "the collection has no texts; add some with: vtsearch texts add FILE"
            )
        has_image = q.image_tokens is not None or image_id is not None
        reranker = self._reranker() if rerank and has_image else None
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
            pixels = read_image(image if image_id is None else safe_file(self.catalog, row))
            fusion = reranker.score_texts(pixels, [h.text for h in hits])
            return apply_rerank(hits, fusion, 1.0, k)
        prior = reranker.prior("i2t", np.stack([rows[h.id].vector for h in hits]))
        fusion = None
        if reranker.mix["i2t"]:  # 0: this direction re-ranks by the prior alone
            states = self.embedder.encode_as([h.text for h in hits], label=False)
            if q.image_tokens is not None:
                regions = reranker.reduce(q.image_tokens)
            else:
                regions = self.region_tokens(reranker, [image_id])
            fusion = reranker.score_texts(regions, states)
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


def at_least(results: list[Result], filters: Filters | None) -> list[Result]:
    """``results`` without those whose final score is below the filters' ``min_score`` (a
    score that is not a number never passes one)."""
    if filters is None or filters.min_score is None:
        return results
    return [r for r in results if r.score >= filters.min_score]


def check_k(k: int, offset: int = 0) -> None:
    if k < 1:
        raise QueryError(f"k must be at least 1, not {k}")
    if offset < 0:
        raise QueryError(f"offset must be 0 or more, not {offset}")
