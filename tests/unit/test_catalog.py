import numpy as np
import pytest
from legacy import as_schema_1

from vtsearch.errors import ModelMismatchError
from vtsearch.storage.catalog import Catalog, NewImage
from vtsearch.storage.schema import SCHEMA_VERSION
from vtsearch.storage.vectors import VectorIndex


def test_model_is_bound_once_and_mismatch_refused(tmp_path, catalog_url):
    cat = Catalog.open(tmp_path, url=catalog_url)
    cat.bind_model("m1", 16)
    cat.bind_model("m1", 16)
    with pytest.raises(ModelMismatchError, match="--model m1"):
        cat.bind_model("m2", 16)
    with pytest.raises(ModelMismatchError):
        cat.bind_model("m1", 32)
    assert Catalog.open(tmp_path, url=catalog_url).get_meta("schema_version") == str(SCHEMA_VERSION)


def test_retrained_weights_of_the_same_model_are_refused(tmp_path, catalog_url):
    cat = Catalog.open(tmp_path, url=catalog_url)
    cat.bind_model("vtsearch-lite", 16, revision="aaa")
    cat.bind_model("vtsearch-lite", 16, revision="aaa")
    with pytest.raises(ModelMismatchError, match="other weights"):
        cat.bind_model("vtsearch-lite", 16, revision="bbb")


def test_changes_since_brings_a_stale_index_up_to_date(tmp_path, catalog_url):
    cat = Catalog.open(tmp_path, url=catalog_url)
    v = np.eye(4, dtype=np.float32)
    written = cat.write_batch(
        [NewImage(f"/p/{i}.jpg", 1, 1, f"h{i}", vector=v[i]) for i in range(3)]
    )
    ids = [i for i, _ in written]
    stale = VectorIndex(4)
    seq, added, removed = cat.changes_since(0)
    stale.apply_changes(seq, added, removed)
    assert len(stale) == 3

    cat.remove([ids[0]])
    cat.write_batch([NewImage("/p/1.jpg", 2, 2, "x", error="broken", replace_id=ids[1])])
    seq, added, removed = cat.changes_since(stale.seq)
    stale.apply_changes(seq, added, removed)
    assert len(stale) == 1
    assert stale.search(v[2][None], 1)[1][0, 0] == ids[2]
    assert cat.counts() == {"indexed": 1, "failed": 1}
    assert cat.failures() == [("/p/1.jpg", "broken")]


def test_ids_are_never_reused(tmp_path, catalog_url):
    cat = Catalog.open(tmp_path, url=catalog_url)
    ((a, _),) = cat.write_batch([NewImage("/a.jpg", 1, 1, "h", vector=np.ones(4, np.float32))])
    cat.remove([a])
    ((b, _),) = cat.write_batch([NewImage("/b.jpg", 1, 1, "h", vector=np.ones(4, np.float32))])
    assert b > a


def _open_and_close(folder) -> str:
    Catalog.open(folder).close()
    return "ok"


def test_a_schema_1_catalog_upgrades_in_place_once_even_when_opened_together(tmp_path):
    import multiprocessing

    cat = Catalog.open(tmp_path)
    cat.write_batch([NewImage("/p/a.jpg", 1, 2, "h", vector=np.ones(4, dtype=np.float32))])
    cat.close()
    as_schema_1(tmp_path)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        assert pool.map(_open_and_close, [tmp_path] * 6) == ["ok"] * 6
    cat = Catalog.open(tmp_path)
    assert cat.get_meta("schema_version") == str(SCHEMA_VERSION)
    (rec,) = cat.records().values()
    assert (rec.path, rec.size, rec.mtime_ns, rec.ctime_ns) == ("/p/a.jpg", 1, 2, None)
    assert cat.roots() == [] and cat.head() == (1, None)  # no mark before the first new commit
    cat.write_batch([NewImage("/p/b.jpg", 1, 2, "i", vector=np.ones(4, dtype=np.float32))])
    assert cat.head()[0] == 2 and cat.mark_at(2) == cat.head()[1]


def test_a_read_only_reader_sees_commits_made_after_it_opened(tmp_path):
    """A reader that may not write opens the file immutable when no writer is at work; it must
    not go stale (nor read pages a checkpoint rewrote) once a writer comes along."""

    def add(cat, n, start):
        items = [
            NewImage(f"/p/{i}.jpg", 1, 2, f"h{i}", vector=np.full(4, i, dtype=np.float32))
            for i in range(start, start + n)
        ]
        cat.write_batch(items)

    writer = Catalog.open(tmp_path)
    add(writer, 3, 0)
    writer.close()
    reader = Catalog.open(tmp_path, readonly=True)
    assert reader.engine.url.query.get("immutable") == "1"
    assert reader.head()[0] == 1 and reader.counts() == {"indexed": 3}

    writer = Catalog.open(tmp_path)
    for k in range(20):  # enough pages for checkpoints to rewrite the file under the reader
        add(writer, 100, 3 + 100 * k)
    assert reader.head() == writer.head()  # a writer at work: read through its log
    assert reader.counts() == {"indexed": 2003}
    writer.close()  # the last connection checkpoints and removes the log
    add_more = Catalog.open(tmp_path)
    add(add_more, 5, 5000)
    add_more.close()
    assert reader.head() == (22, add_more.mark_at(22)) and reader.counts() == {"indexed": 2008}
    assert len(reader.records()) == 2008
