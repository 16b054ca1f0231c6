"""The public engine: one collection folder, one model; search, similar, images by id, explain
and texts here, index/watch/texts in ``indexing``, duplicates/check/optimize/status/export in
``upkeep``.

A thin facade: it opens the collection's parts lazily (``vtsearch.collection``) and hands the work
to ``vtsearch.search`` (the query path, images by id, explanations), ``vtsearch.indexer`` and
``vtsearch.storage``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vtsearch import config
from vtsearch.api.indexing import Indexing
from vtsearch.api.upkeep import Upkeep
from vtsearch.collection import Collection

if TYPE_CHECKING:
    from PIL import Image

    from vtsearch.models.base import Embedder
    from vtsearch.search.blip import BlipReranker
    from vtsearch.search.explain import Explanation
    from vtsearch.search.rerank import FusionReranker
    from vtsearch.search.results import ImageInfo, Result, TextResult
    from vtsearch.storage.filters import Filters


class Engine(Indexing, Upkeep):
    """A collection of images in one folder, searchable by text or by image.

    One engine may serve searches from many threads at once, also while one of them indexes.

    Args:
        path: the collection folder (created on first index); default ``$VTSEARCH_HOME/default``.
        model: embedding model name; default the collection's own model, else ``vtsearch-lite``.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when present.
        embedder: an already loaded model to use (shared between engines); overrides ``model``.
        reranker: ``None`` (the model's fusion scorer if it ships one), ``"none"``, ``"blip"``,
            or the path of a fusion weights file.
        catalog: a PostgreSQL URL (``postgresql+psycopg://user@host/db``) for the catalog of a
            new collection, instead of the SQLite file in ``path``; the folder records it, so
            later engines on ``path`` find it without (see ``docs/scale.md``).
        ray: a Ray cluster (``"auto"``, ``"local"`` or its address) to index on and, once the
            collection's index is sharded (``build_shards``), to search the shards on.

    Example:
        >>> eng = Engine("/tmp/photos-index")  # doctest: +SKIP
        >>> eng.index("~/Pictures")  # doctest: +SKIP
        >>> [r.path for r in eng.search(text="a red car", k=3)]  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path | None = None,
        model: str | None = None,
        device: str | None = None,
        embedder: Embedder | None = None,
        reranker: str | None = None,
        catalog: str | None = None,
        ray: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser() if path else config.default_collection()
        #: The collection's lazily opened parts, shared by every thread using this engine.
        self._parts = Collection(self.path, model, device, embedder, reranker, catalog, ray)

    @property
    def model_id(self) -> str:
        return self._parts.model_id

    def reranker(self) -> FusionReranker | BlipReranker | None:
        """The re-ranker queries use (loaded on first use), or None."""
        return self._parts.reranker()

    # -- public API -----------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        image: str | Path | Image.Image | bytes | None = None,
        k: int = 10,
        *,
        offset: int = 0,
        rerank: bool = True,
        rerank_k: int | None = None,
        filters: Filters | None = None,
    ) -> list[Result]:
        """Images ranked by similarity to a text query, an example image (a file, a decoded
        image or an image file's bytes), or both; results ``offset`` to ``offset + k``.

        Text may carry weighted terms (``"a beach - people + sunset^0.5"``, see ``parse_query``).
        With a text and a fusion scorer, the bi-encoder's top ``rerank_k`` are re-ranked by it
        and the rest follow in bi-encoder order, so pages of one query never overlap.

        ``filters`` (folder, file name, date taken, size, shape, format) are applied inside the
        search, so ``k`` results come back whenever ``k`` images match; its ``min_score`` cuts
        the results whose final score is lower.

        Example:
            >>> from vtsearch.storage.filters import Filters
            >>> eng.search("a beach", k=20, filters=Filters(after="2024-06", before="2024-09",
            ...     folders=["~/Pictures"], orientation="landscape"))  # doctest: +SKIP
        """
        return self._parts.searcher().images(text, image, k, rerank, rerank_k, offset, filters)

    def similar(
        self, image_id: int, k: int = 10, *, offset: int = 0, filters: Filters | None = None
    ) -> list[Result]:
        """Images like the indexed image ``image_id`` ("more like this"): its stored vector is
        the query, and the image itself is left out; ``filters`` as for :meth:`search`. Raises
        ``ImageNotFoundError``."""
        return self._parts.searcher().similar(image_id, k, offset, filters)

    def search_texts(
        self,
        image: str | Path | Image.Image | bytes | None = None,
        text: str | None = None,
        k: int = 10,
        *,
        image_id: int | None = None,
        rerank: bool = True,
        rerank_k: int | None = None,
    ) -> list[TextResult]:
        """The collection's texts ranked by similarity to an image (or the indexed image
        ``image_id``), a text, or both. With a query image and a fusion scorer, the top
        ``rerank_k`` texts are re-ranked by it. Raises ``NoTextsError`` without texts."""
        return self._parts.searcher().texts(image, text, k, rerank, rerank_k, image_id)

    def image(self, image_id: int) -> ImageInfo:
        """Catalog metadata of an indexed image. Raises ``ImageNotFoundError``."""
        return self._parts.gallery().info(image_id)

    def image_file(self, image_id: int) -> Path:
        """The file of an indexed image, links resolved, when it is a regular file inside its
        indexed folder; else ``ImageNotFoundError`` (see ``vtsearch.search.gallery``)."""
        return self._parts.gallery().file(image_id)

    def thumbnail(self, image_id: int) -> bytes:
        """A JPEG thumbnail (longest side 256) of an indexed image, cached in the collection's
        ``thumbs/`` folder. Raises ``ImageNotFoundError``."""
        return self._parts.gallery().thumbnail(image_id)

    def explain(self, text: str, image_id: int) -> Explanation:
        """Where each word of ``text`` looks in the indexed image ``image_id`` and how much it
        counts, by the fusion scorer. Raises ``NoScorerError`` when there is none."""
        return self._parts.searcher().explain(text, image_id)

    def can_explain(self) -> bool:
        """Whether the re-ranker is a fusion scorer (what ``explain`` needs)."""
        from vtsearch.search.rerank import FusionReranker

        return isinstance(self.reranker(), FusionReranker)

    def close(self) -> None:
        self._parts.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
