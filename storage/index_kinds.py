"""Index kinds and the factory that picks one: exact search (``flat``) while a scan is fast
enough, an HNSW graph (over 8-bit codes once there are enough vectors) beyond that, IVF-PQ when
the vectors would not fit in memory; and the empty FAISS index of a kind.

- ``flat``: exact inner-product search. Best while a brute-force scan is fast enough.
- ``hnsw``: a graph index (HNSW, ``M`` links per node); ``ef_search`` trades recall for speed.
  Its ``codec`` is either the full float vectors (``flat``) or, as the factory picks it, 8-bit
  scalar-quantised codes (``sq8``) that the graph walk reads at a quarter of the bytes, with the
  best ``refine * k`` candidates re-scored on float16 copies of the vectors. Sub-millisecond
  queries at a million vectors.
- ``ivfpq``: an inverted file with a trained coarse quantizer and product-quantised codes
  (``pq_m`` bytes per vector), for collections whose full vectors do not fit in memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

KINDS = ("flat", "hnsw", "ivfpq")
#: How an HNSW index stores its vectors (see the module docstring).
CODECS = ("flat", "sq8")

#: Up to this many vectors, exact search is fast enough (about 10 ms per query at dimension 1152
#: on one core of a laptop CPU); beyond it an approximate index pays.
FLAT_MAX = 50_000
#: Share of the machine's memory the index may use before the factory compresses vectors (IVF-PQ).
MEMORY_SHARE = 0.5
#: Fewest vectors an IVF-PQ index trains well on: FAISS wants 39 points for each of the 256
#: centroids of a sub-quantizer.
IVFPQ_MIN = 10_000
#: Fewest vectors an ``sq8`` HNSW index learns its per-dimension value ranges from.
SQ8_MIN = 1_000
#: Candidates per wanted result that an ``sq8`` HNSW index re-scores on float16 vectors: at 1M
#: synthetic vectors 4 gave the recall of 8 at a lower latency (a one-off sweep, ef 64 to 256).
SQ8_REFINE = 4
#: Build-time beam of an ``sq8`` HNSW graph. At 1M synthetic vectors (``bench/vector_index.py``)
#: 64 gave R@10 0.79 at ef 64 and 160 gave 0.98: the better graph costs 2.8x the build time
#: (0.6 ms a vector on 2 cores, against 25 ms or more to embed the image it stands for). 256 was
#: no better at 1.8x the build time again.
SQ8_EF_CONSTRUCTION = 160


def load_faiss():
    import faiss

    return faiss


@dataclass(frozen=True)
class IndexSpec:
    """How an index is built; recorded with the index file and in the catalog meta.

    Example:
        >>> IndexSpec.from_json(IndexSpec("hnsw", m=32).to_json()).m
        32
    """

    kind: str = "flat"
    #: HNSW: links per node, build-time and search-time beam widths.
    m: int = 32
    ef_construction: int = 64
    ef_search: int = 64
    #: IVF: inverted lists, lists visited per query, PQ sub-quantizers (bytes per vector).
    nlist: int = 0
    nprobe: int = 0
    pq_m: int = 0
    #: Collection size the index was chosen for (IVF quantizers are trained for it).
    built_for: int = 0
    #: HNSW: ``flat`` (float32 vectors) or ``sq8`` (8-bit codes, re-scored on float16 copies).
    codec: str = "flat"
    #: HNSW ``sq8``: candidates re-scored per wanted result.
    refine: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")

    @property
    def quantised_graph(self) -> bool:
        """An HNSW graph over 8-bit codes, with float16 re-scoring."""
        return self.kind == "hnsw" and self.codec == "sq8"

    def train_min(self) -> int:
        """Fewest vectors this index can be trained on (0: it needs no training)."""
        if self.kind == "ivfpq":
            return self.nlist or 1024
        return SQ8_MIN if self.quantised_graph else 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None, default_kind: str = "flat") -> IndexSpec:
        if not text:
            return cls(default_kind)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def bytes_per_vector(self, dim: int) -> float:
        """Approximate resident memory per vector, id map included."""
        idmap = 8 + 16  # the id array, and the reverse map's hash node
        if self.kind == "flat":
            return 4 * dim + idmap
        if self.kind == "hnsw":
            # Level 0 has 2*M links; upper levels add about 1/M of that again.
            links = 4 * 2 * self.m * (1 + 1 / self.m)
            vectors = (1 + 2) * dim if self.quantised_graph else 4 * dim
            return vectors + links + idmap
        return self.pq_m + 8 + idmap  # codes, and the inverted list's id


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def _pq_m(dim: int, most: int = 96) -> int:
    """The largest number of PQ sub-quantizers up to ``most`` that divides ``dim``."""
    return max(m for m in range(1, min(most, dim) + 1) if dim % m == 0)


def choose_index(n: int, dim: int, memory_bytes: int | None = None) -> IndexSpec:
    """The index kind and parameters for a collection of ``n`` vectors of dimension ``dim``.

    Exact search while it is fast enough (``n <= FLAT_MAX``); then HNSW while its full vectors and
    graph fit in ``MEMORY_SHARE`` of ``memory_bytes`` (default: this machine's RAM); beyond that
    IVF-PQ with about ``4 sqrt(n)`` lists.

    Example:
        >>> choose_index(10_000, 1152).kind, choose_index(1_000_000, 1152, 64 << 30).kind
        ('flat', 'hnsw')
        >>> choose_index(100_000_000, 1152, 64 << 30).kind
        'ivfpq'
    """
    if n <= FLAT_MAX:
        return IndexSpec("flat", built_for=n)
    hnsw = hnsw_spec(n)
    memory = physical_memory() if memory_bytes is None else memory_bytes
    if memory <= 0 or n * hnsw.bytes_per_vector(dim) <= MEMORY_SHARE * memory:
        return hnsw
    nlist = int(2 ** round(math.log2(max(256.0, 4 * math.sqrt(n)))))
    return IndexSpec(
        "ivfpq", nlist=nlist, nprobe=max(16, nlist // 64), pq_m=_pq_m(dim), built_for=n
    )


def hnsw_spec(n: int) -> IndexSpec:
    """The HNSW parameters for ``n`` vectors: a graph over 8-bit codes once there are enough
    vectors to learn their ranges from (faster and 25% smaller than over float vectors, at the
    same recall in ``bench/vector_index.py``)."""
    if n < SQ8_MIN:
        return IndexSpec("hnsw", built_for=n)
    return IndexSpec(
        "hnsw",
        ef_construction=SQ8_EF_CONSTRUCTION,
        codec="sq8",
        refine=SQ8_REFINE,
        built_for=n,
    )


def make_index(spec: IndexSpec | str, dim: int):
    """An empty FAISS index of ``spec``, wrapped so it is addressed by catalog ids.

    An ``ivfpq`` index must be trained (:meth:`VectorIndex.train`) before vectors are added.
    """
    faiss = load_faiss()
    spec = IndexSpec(spec) if isinstance(spec, str) else spec
    if spec.kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif spec.quantised_graph:
        ip, sq = faiss.METRIC_INNER_PRODUCT, faiss.ScalarQuantizer
        # One range for all dimensions rather than one per dimension: the graph walk decodes
        # faster (R@10 alike, 10-20% less time per query on 50k synthetic vectors), and the
        # float16 re-scoring puts the final order right.
        graph = faiss.IndexHNSWSQ(dim, sq.QT_8bit_uniform, spec.m, ip)
        graph.hnsw.efConstruction = spec.ef_construction
        graph.hnsw.efSearch = spec.ef_search
        fine = faiss.IndexScalarQuantizer(dim, sq.QT_fp16, ip)
        base = faiss.IndexRefine(graph, fine)
        base.k_factor = float(spec.refine or SQ8_REFINE)
        # The refine index frees its parts; Python must not free them a second time.
        graph.this.disown()
        fine.this.disown()
        base.own_fields = base.own_refine_index = True
    elif spec.kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = spec.ef_construction
        base.hnsw.efSearch = spec.ef_search
    else:
        nlist = spec.nlist or 1024
        quantizer = faiss.IndexFlatIP(dim)
        base = faiss.IndexIVFPQ(
            quantizer, dim, nlist, spec.pq_m or _pq_m(dim), 8, faiss.METRIC_INNER_PRODUCT
        )
        base.nprobe = spec.nprobe or 16
        base.set_direct_map_type(faiss.DirectMap.Array)  # reconstruct() by slot
    return faiss.IndexIDMap2(base)


def spec_for_kind(kind: str, n: int, dim: int, memory_bytes: int | None = None) -> IndexSpec:
    """Parameters for an index of a given ``kind`` holding ``n`` vectors (a forced choice)."""
    auto = choose_index(n, dim, memory_bytes)
    if auto.kind == kind:
        return auto
    if kind == "hnsw":
        return hnsw_spec(n)
    if kind != "ivfpq":
        return IndexSpec(kind, built_for=n)
    if n < IVFPQ_MIN:
        from vtsearch.errors import ConfigError

        raise ConfigError(
            f"an ivfpq index needs at least {IVFPQ_MIN} vectors to train on, not {n}; "
            "use flat or hnsw"
        )
    # Enough training points per list (FAISS wants about 39), at least one list.
    nlist = int(2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return IndexSpec(
        "ivfpq",
        nlist=nlist,
        nprobe=max(1, min(nlist, max(16, nlist // 64))),
        pq_m=_pq_m(dim),
        built_for=n,
    )
