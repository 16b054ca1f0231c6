"""A corrupt or unreadable file is recorded with its reason and never stops the run."""

from conftest import make_photo

from vtsearch import Engine


def test_corrupt_files_are_skipped_and_reported(tmp_path, photos, tiny_clip):
    (photos / "truncated.jpg").write_bytes((photos / "sub" / "deep.jpg").read_bytes()[:200])
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.jpg").write_text("this is not an image")
    eng = Engine(tmp_path / "coll", model=tiny_clip)
    report = eng.index(photos, workers=0)
    failed = dict(report.failed)
    assert set(failed) == {
        str((photos / n).resolve()) for n in ("truncated.jpg", "empty.png", "notes.jpg")
    }
    assert all(reason for reason in failed.values())
    assert report.embedded == 7
    st = eng.status()
    assert st.indexed == 7 and st.counts["failed"] == 3
    assert {p for p, _ in st.failed} == set(failed)

    # Fixing a broken file makes the next run index it.
    make_photo(photos / "notes.jpg", seed=3)
    again = eng.index(photos, workers=0)
    assert again.embedded == 1
    assert eng.status().counts["failed"] == 2
