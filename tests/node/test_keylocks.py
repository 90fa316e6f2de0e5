"""KeyLocks: the per-key locks client requests and the migrator serialize on."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from dscluster.node.keylocks import KeyLocks


async def test_one_holder_per_key_and_other_keys_are_free():
    locks = KeyLocks()
    order: list[str] = []

    async def hold(name: str, keys: list[str], release: trio.Event) -> None:
        async with locks.hold(keys):
            order.append(name)
            await release.wait()

    first, second = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, "a", ["/k1", "/k2"], first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hold, "b", ["/k2"], second)
        async with locks.hold(["/k3"]):  # an unrelated key is not blocked
            order.append("c")
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["a", "c"] and locks.locked("/k2")
        first.set()
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["a", "c", "b"]
        second.set()
    assert len(locks) == 0 and not locks.locked("/k1")  # idle keys cost nothing


async def test_waiters_get_the_key_in_arrival_order():
    locks = KeyLocks()
    got: list[int] = []

    async def take(i: int) -> None:
        async with locks.hold(["/k"]):
            got.append(i)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        async with locks.hold(["/k"]):
            for i in range(5):
                nursery.start_soon(take, i)
                await trio.testing.wait_all_tasks_blocked()
    assert got == [0, 1, 2, 3, 4]
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_nothing_behind():
    locks = KeyLocks()
    release = trio.Event()

    async def holder() -> None:
        async with locks.hold(["/k"]):
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.05) as scope:
            async with locks.hold(["/k"]):
                pytest.fail("took a held lock")
        assert scope.cancelled_caught
        release.set()
    assert len(locks) == 0
    async with locks.hold(["/k"]):  # still usable
        assert locks.locked("/k")


async def test_a_failing_body_releases_every_key():
    locks = KeyLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold(["/a", "/b", "/a"]):  # duplicates allowed
            raise RuntimeError("boom")
    assert len(locks) == 0


async def test_overlapping_multi_key_holders_never_deadlock_or_overlap():
    """Many tasks take random overlapping key sets; no key is ever held twice."""
    locks = KeyLocks()
    rng = random.Random(7)
    inside: set[str] = set()

    async def worker() -> None:
        for _ in range(40):
            keys = rng.sample([f"/k{i}" for i in range(8)], rng.randint(1, 4))
            async with locks.hold(keys):
                assert not inside & set(keys)
                inside.update(keys)
                await trio.sleep(0)
                inside.difference_update(keys)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(worker)
    assert len(locks) == 0
