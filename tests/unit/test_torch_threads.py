"""`one_torch_thread` from many threads at once, as a server sharing one Engine runs it."""

import threading
import time

import torch

from vtsearch.search.query import one_torch_thread


def _count_in_a_new_thread() -> int:
    # A thread started now takes the count last set anywhere: what a server's next worker gets.
    got = []
    t = threading.Thread(target=lambda: got.append(torch.get_num_threads()))
    t.start()
    t.join()
    return got[0]


def test_concurrent_calls_restore_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # a known count above 1, whatever the machine has
    try:
        inside_counts: list[int] = []
        n_threads, rounds = 4, 60

        def worker(barrier: threading.Barrier, i: int) -> None:
            barrier.wait()
            time.sleep(0.0005 * (i % 3))  # stagger the ways in and out
            with one_torch_thread():
                inside_counts.append(torch.get_num_threads())
                time.sleep(0.0005 * ((i + 1) % 3))

        for _ in range(rounds):
            # Fresh threads each round, started together: saves and restores interleave.
            barrier = threading.Barrier(n_threads)
            threads = [threading.Thread(target=worker, args=(barrier, i)) for i in range(n_threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert inside_counts == [1] * (n_threads * rounds)
        assert torch.get_num_threads() == 3
        assert _count_in_a_new_thread() == 3
    finally:
        torch.set_num_threads(before)


def test_nested_and_decorated_calls_restore_on_the_way_out():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:

        @one_torch_thread()
        def inner() -> int:
            return torch.get_num_threads()

        with one_torch_thread():
            assert inner() == 1
            assert torch.get_num_threads() == 1  # the inner call did not restore early
        assert torch.get_num_threads() == 3
        assert _count_in_a_new_thread() == 3
    finally:
        torch.set_num_threads(before)
