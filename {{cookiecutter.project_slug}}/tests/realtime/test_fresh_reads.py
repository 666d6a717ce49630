"""Reads shared by the callers asking at once, each a read begun after its caller asked."""

from __future__ import annotations

import asyncio

import pytest

from {{ cookiecutter.package_name }}.realtime.fresh_reads import FreshReads


class GatedStore:
    """A value that changes, read slowly: each read waits until the test lets it finish."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.gate = asyncio.Event()
        self.began = asyncio.Event()

    async def read(self) -> int:
        self.reads += 1
        self.began.set()
        seen = self.value
        await self.gate.wait()
        return seen


async def test_callers_asking_while_a_read_runs_share_the_next_which_sees_what_they_saw() -> None:
    store, reads = GatedStore(), FreshReads[str, int]("test")
    first = asyncio.create_task(reads.read("key", store.read))
    await asyncio.wait_for(store.began.wait(), 5)
    store.value = 1  # stored after the first read began: those asking now must see it
    later = [asyncio.create_task(reads.read("key", store.read)) for _ in range(20)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.reads == 1
    store.gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [1] * 20
    assert store.reads == 2


async def test_a_failed_read_reaches_its_callers_and_the_next_one_runs() -> None:
    reads = FreshReads[str, int]("test")
    outcomes = iter([RuntimeError("database down"), 7])

    async def read() -> int:
        await asyncio.sleep(0.01)
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    first = asyncio.create_task(reads.read("key", read))
    await asyncio.sleep(0.005)  # the first read is on its way
    second = asyncio.create_task(reads.read("key", read))
    with pytest.raises(RuntimeError, match="database down"):
        await first
    assert await second == 7


async def test_a_caller_that_gives_up_does_not_cancel_the_read_of_the_others() -> None:
    store, reads = GatedStore(), FreshReads[str, int]("test")
    quitter = asyncio.create_task(reads.read("key", store.read))
    stayer = asyncio.create_task(reads.read("key", store.read))
    await asyncio.wait_for(store.began.wait(), 5)
    quitter.cancel()
    store.gate.set()
    assert await stayer == 0
    assert store.reads == 1
    await reads.wait()


async def test_keys_are_read_apart() -> None:
    store, reads = GatedStore(), FreshReads[str, int]("test")
    store.gate.set()
    assert await asyncio.gather(reads.read("a", store.read), reads.read("b", store.read)) == [0, 0]
    assert store.reads == 2
