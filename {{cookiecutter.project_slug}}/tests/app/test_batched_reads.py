"""Reads of one key each, made together: the keys asked for while a read is on its way go in the next."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from {{ cookiecutter.package_name }}.db.batched_reads import BatchedReads


class GatedTable:
    """Values that change, read slowly: each read waits until the test lets it finish."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.reads: list[list[str]] = []
        self.gate = asyncio.Event()
        self.began = asyncio.Event()

    async def read_many(self, keys: Sequence[str]) -> dict[str, int]:
        self.reads.append(list(keys))
        self.began.set()
        seen = {key: self.values.get(key, 0) for key in keys}
        await self.gate.wait()
        return seen


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def read_on_its_way(
    table: GatedTable, then: dict[str, int]
) -> tuple[BatchedReads[str, int], asyncio.Task[int]]:
    """Reads of `table`, and a read of "a" on its way, which saw what was there before `then` was stored."""
    reads = BatchedReads("test", table.read_many)
    first = asyncio.create_task(reads.read("a"))
    await asyncio.wait_for(table.began.wait(), 5)
    table.values = then
    return reads, first


async def test_keys_asked_for_while_a_read_is_on_its_way_are_read_together_in_the_next() -> None:
    table = GatedTable()
    reads, first = await read_on_its_way(table, then={"a": 1, "b": 2, "c": 3})
    later = [asyncio.create_task(reads.read(key)) for key in ("b", "c", "b", "c")]
    await settle()
    assert table.reads == [["a"]]
    table.gate.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [2, 3, 2, 3]
    assert table.reads == [["a"], ["b", "c"]]


async def test_a_caller_joins_the_read_of_its_key_on_its_way_only_if_it_may() -> None:
    table = GatedTable()
    reads, first = await read_on_its_way(table, then={"a": 1})
    joined = asyncio.create_task(reads.read("a"))
    fresh = asyncio.create_task(reads.read("a", join=False))
    await settle()
    table.gate.set()
    assert await asyncio.gather(first, joined, fresh) == [0, 0, 1]
    assert table.reads == [["a"], ["a"]]


async def test_a_forgotten_key_is_read_again_for_those_who_ask_after() -> None:
    table = GatedTable()
    reads, first = await read_on_its_way(table, then={"a": 1})
    reads.forget(lambda key: key == "a")
    after = asyncio.create_task(reads.read("a"))
    await settle()
    table.gate.set()
    assert await asyncio.gather(first, after) == [0, 1]


async def test_a_read_takes_at_most_its_bound_of_keys() -> None:
    table = GatedTable()
    table.gate.set()
    reads = BatchedReads("test", table.read_many, most=3)
    keys = [f"k{index}" for index in range(7)]
    assert await asyncio.gather(*(reads.read(key) for key in keys)) == [0] * 7
    assert len(table.reads) == 3
    assert all(len(read) <= 3 for read in table.reads)
    assert sorted(key for read in table.reads for key in read) == keys


async def test_a_failed_read_reaches_its_callers_and_the_next_one_runs() -> None:
    outcomes = iter([RuntimeError("database down"), {"b": 7}])

    async def read_many(keys: Sequence[str]) -> dict[str, int]:
        await asyncio.sleep(0.01)
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    reads = BatchedReads("test", read_many)
    first = asyncio.create_task(reads.read("a"))
    await asyncio.sleep(0.005)  # the first read is on its way
    second = asyncio.create_task(reads.read("b"))
    with pytest.raises(RuntimeError, match="database down"):
        await first
    assert await second == 7


async def test_a_read_without_a_value_for_a_key_fails_its_callers_and_the_next_one_runs() -> None:
    async def read_many(keys: Sequence[str]) -> dict[str, int]:
        return {key: len(key) for key in keys if key != "gone"}

    reads = BatchedReads("test", read_many)
    with pytest.raises(KeyError):
        await reads.read("gone")
    assert await reads.read("here") == 4


async def test_a_caller_that_gives_up_does_not_cancel_the_read_of_the_others() -> None:
    table = GatedTable()
    reads = BatchedReads("test", table.read_many)
    quitter = asyncio.create_task(reads.read("a"))
    stayer = asyncio.create_task(reads.read("a"))
    await asyncio.wait_for(table.began.wait(), 5)
    quitter.cancel()
    table.gate.set()
    assert await stayer == 0
    assert table.reads == [["a"]]
