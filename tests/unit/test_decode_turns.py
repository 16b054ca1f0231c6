"""Decoding in turns with the model: every file once, in order, failures as data; a consumer
that stops early leaves no thread behind and torch's thread count as it was."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import make_photo
from torchvision import transforms

from vtsearch.indexer.decode import DecodeInTurns

TRANSFORM = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])


@pytest.fixture
def paths(tmp_path) -> list[str]:
    files = [make_photo(tmp_path / f"p{i}.png", seed=i) for i in range(7)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    files.insert(4, bad)
    return [str(f) for f in files]


def decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vtsearch-decode")]


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_every_file_once_in_order_with_failures_as_data(paths, threads):
    batches = list(DecodeInTurns(paths, TRANSFORM, 3, threads))
    assert [[d.index for d in ds] for _, ds in batches] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [None if px is None else tuple(px.shape) for px, _ in batches] == [
        (3, 3, 8, 8),
        (2, 3, 8, 8),
        (2, 3, 8, 8),
    ]
    failed = [d for _, ds in batches for d in ds if d.error]
    assert [d.index for d in failed] == [4] and "PNG" in failed[0].error
    assert decode_threads() == []


def test_a_consumer_that_stops_early_leaves_nothing_running(paths):
    threads_before = torch.get_num_threads()
    turns = DecodeInTurns(paths, TRANSFORM, 2, 2)
    it = iter(turns)
    next(it)
    turns.decode_next()  # a batch under way when the consumer gives up
    it.close()
    assert decode_threads() == []
    # The decode threads ran torch on one thread each; the default is the consumer's again, for
    # this thread and for threads started from now on.
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == threads_before and seen == [threads_before]
