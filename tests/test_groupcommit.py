"""GroupCommitter: concurrent submits share flushes; results and errors reach the right caller."""

from __future__ import annotations

import threading
import time

import pytest

from kit.groupcommit import GroupCommitter


def test_lone_caller_flushes_alone_and_gets_its_result():
    gc = GroupCommitter(lambda items: [i * 2 for i in items])
    assert [gc.submit(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert gc.batches == 5 and gc.items == 5


def test_concurrent_callers_share_flushes_and_get_their_own_results():
    sizes: list[int] = []

    def flush(items):
        sizes.append(len(items))
        time.sleep(0.01)  # a round trip, during which others queue up
        return [("ok", i) for i in items]

    gc = GroupCommitter(flush)
    results: dict[int, object] = {}

    def caller(n: int) -> None:
        for k in range(10):
            results[n * 100 + k] = gc.submit(n * 100 + k)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {k: ("ok", k) for k in results} and len(results) == 160
    assert gc.items == 160
    assert gc.batches < 160 and max(sizes) > 1


def test_per_item_errors_and_failed_flushes_reach_only_their_callers():
    calls = {"n": 0}

    def flush(items):
        calls["n"] += 1
        if any(i == "boom" for i in items):
            raise RuntimeError("flush failed")
        return [ValueError(i) if i.startswith("bad") else i.upper() for i in items]

    gc = GroupCommitter(flush)
    assert gc.submit("a") == "A"
    with pytest.raises(ValueError, match="bad1"):
        gc.submit("bad1")
    with pytest.raises(RuntimeError, match="flush failed"):
        gc.submit("boom")
    assert gc.submit("b") == "B"  # leadership was handed back after the failure
