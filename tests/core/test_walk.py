"""Read-ahead across files (:mod:`rangefs.fs.walk`) through the core: a reader walking a
directory gets the next files fetched ahead, once each, within the budget; other readers
trigger nothing."""

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from rangefs.fs.pins import AHEAD_FRESH
from rangefs.fs.walk import AHEAD_FILES, WALK_AFTER
from tests.core.fakes import Gate
from tests.core.helpers import CHUNK, gate_reached, open_path, read_all, settle, until

SMALL = 3000


def put_tree(env, count: int, size: int = SMALL, prefix: str = "d/") -> dict[str, bytes]:
    return {
        f"{prefix}f{i:03d}": env.store.put(f"{prefix}f{i:03d}", size=size, seed=i)
        for i in range(count)
    }


def held(gates: list[Gate], count: int, timeout: float = 10.0) -> bool:
    """Waits (in a worker thread) until ``count`` of the held GETs reached the store."""
    deadline = time.monotonic() + timeout
    while sum(g.arrived.is_set() for g in gates) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def count_store_calls(store: Any) -> list[tuple[str, str]]:
    """Records the blocking ChunkCache's writes and batch lookups as (call, object key);
    an ``adopt`` is named with what it wrote in the same transaction (+proof, +bind)."""
    calls: list[tuple[str, str]] = []
    names = ("adopt", "bind_etag", "record_proof", "forget_proof", "pinned_each", "open_fill")
    for name in (*names, "contains_each"):
        method = getattr(store, name)

        def counted(what: Any, *args: Any, _n: str = name, _m: Any = method, **kw: Any) -> Any:
            if _n == "adopt":
                _n += "+proof" * (kw.get("proof") is not None) + "+bind" * kw["bind"]
            if _n == "pinned_each":
                what = [None]  # counted once a batch
            for one in what if isinstance(what, list) else [what]:
                calls.append((_n, getattr(getattr(one, "obj", one), "key", "")))
            return _m(what, *args, **kw)

        setattr(store, name, counted)
    return calls


async def copy(core, path: str, size: int) -> bytes:
    """What cp does with one file: open, read to the end, release."""
    fh = await open_path(core.fs, path)
    try:
        return await read_all(core.fs, fh, size)
    finally:
        core.fs.release(fh)


async def test_a_walk_fetches_each_file_once_ahead_of_the_reader(env):
    tree = put_tree(env, 80)
    env.store.put("d/sub/x", size=10)  # a directory in the listing is skipped by the walk
    async with env.core() as core:
        for key, data in tree.items():
            assert await copy(core, key, len(data)) == data
        await settle(core)
        assert all(env.store.get_count(key) == 1 for key in tree)
        assert core.stats.walk_files_ahead == len(tree) - WALK_AFTER - 1
        assert core.stats.walk_files_opened == core.stats.walk_files_ahead
        assert core.stats.misses == WALK_AFTER + 1  # only the reads before the walk waited
        assert env.store.calls["list_dir"] == 2 and env.store.calls["head"] == 0


async def test_files_ahead_are_at_most_the_cap(env):
    tree = put_tree(env, AHEAD_FILES * 3)
    keys = list(tree)
    async with env.core() as core:
        for key in keys[: WALK_AFTER + 1]:
            await copy(core, key, SMALL)
        await settle(core)
        ahead = {g.key for g in env.store.gets} - set(keys[: WALK_AFTER + 1])
        assert ahead == set(keys[WALK_AFTER + 1 : WALK_AFTER + 1 + AHEAD_FILES])


async def test_random_opens_and_partial_reads_trigger_nothing(env):
    tree = put_tree(env, 60)
    keys = list(tree)
    picked = random.Random(5).sample(keys, 20)
    async with env.core() as core:
        for key in picked:
            assert await copy(core, key, SMALL) == tree[key]
        for key in keys[:10]:  # in order, but only the first bytes (head -c)
            fh = await open_path(core.fs, key)
            await core.fs.read(fh, 0, 100)
            core.fs.release(fh)
        await settle(core)
        assert core.stats.walk_files_ahead == 0
        assert {g.key for g in env.store.gets} == set(picked) | set(keys[:10])


async def test_large_files_ahead_get_only_their_first_chunk(env):
    tree = put_tree(env, WALK_AFTER + 1)
    big = env.store.put("d/g-big", size=5 * CHUNK + 9, seed=99)
    async with env.core() as core:
        for key, data in tree.items():
            await copy(core, key, len(data))
        await settle(core)
        assert env.store.chunks_fetched("d/g-big", CHUNK) == [0]
        assert await copy(core, "d/g-big", len(big)) == big
        await settle(core)
        assert sorted(env.store.chunks_fetched("d/g-big", CHUNK)) == list(range(6))


async def test_a_demand_read_does_not_wait_behind_files_ahead(env):
    tree = put_tree(env, 40)
    keys = list(tree)
    other = env.store.put("other", size=SMALL, seed=7)
    gates = [env.store.hold(key) for key in keys[WALK_AFTER + 1 :]]
    async with env.core(parallel=4) as core:
        for key in keys[:WALK_AFTER]:
            await copy(core, key, SMALL)
        await open_path(core.fs, keys[WALK_AFTER])  # the walk starts: the next files are held
        assert await trio.to_thread.run_sync(held, gates, 2)  # both read-ahead slots are held
        assert await copy(core, "other", SMALL) == other  # read-ahead slots leave room
        assert env.store.max_in_flight <= 4
        for gate in gates:
            gate.release()
        await settle(core)


async def test_no_files_ahead_while_the_server_pushes_back(env):
    tree = put_tree(env, 20)
    keys = list(tree)
    async with env.core() as core:
        for key in keys[:WALK_AFTER]:
            await copy(core, key, SMALL)
        core.reader.budget.pushback()  # a 503 SlowDown: GETs in flight halved
        await copy(core, keys[WALK_AFTER], SMALL)
        await settle(core)
        assert core.stats.walk_files_ahead == 0
        assert len(env.store.gets) == WALK_AFTER + 1
        for key in keys[WALK_AFTER + 1 :]:  # the cap grows back as GETs succeed: walk again
            await copy(core, key, SMALL)
        await settle(core)
        assert core.stats.walk_files_ahead > 0
        assert len(env.store.gets) == len(tree)


async def test_files_ahead_stay_within_the_budget_of_bytes_ahead(env):
    tree = put_tree(env, WALK_AFTER + 1)
    for i in range(10):
        env.store.put(f"d/g{i}", size=3 * CHUNK, seed=i)
    async with env.core(cache_size=8 * CHUNK, max_readahead=8 * CHUNK) as core:
        # bytes ahead: a quarter of the cache (2 chunks); the walks hold at most half (1)
        for key, data in tree.items():
            await copy(core, key, len(data))
        await settle(core)
        ahead = {g.key for g in env.store.gets} - set(tree)
        assert ahead == {"d/g0"}
        assert core.fs.walks.ahead() == CHUNK


async def test_files_ahead_are_proven_as_they_land_and_read_without_a_disk_lookup(env):
    """What a walker's read of a small file fetched ahead waits for: nothing but the bytes
    (in RAM, no thread, no index lookup) — the proof passed when the file landed."""
    tree = put_tree(env, 30)
    keys = list(tree)
    async with env.core() as core:
        lookups = []
        store = core.fs.cache.cache  # the blocking ChunkCache: its index and files
        read_range, read_range_cached = store.read_range, store.read_range_cached

        def counted(read: Callable[..., Any]) -> Callable[..., Any]:
            def lookup(*args: Any) -> Any:
                lookups.append(args)
                return read(*args)

            return lookup

        store.read_range, store.read_range_cached = counted(read_range), counted(read_range_cached)
        for key in keys[: WALK_AFTER + 1]:
            await copy(core, key, SMALL)
        await settle(core)
        assert core.stats.proofs_passed == len(tree)  # all of them, before they are opened
        lookups.clear()  # the first files were misses: looked up, then fetched
        for key in keys[WALK_AFTER + 1 :]:
            assert await copy(core, key, SMALL) == tree[key]
        assert lookups == []
        assert core.stats.proofs_passed == len(tree)


def count_pin_lookups(core) -> list[str]:
    """The keys whose pins an open asks the cache for (a thread hop on the open's path)."""
    asked: list[str] = []
    pinned = core.fs.cache.pinned

    async def counted(obj):
        asked.append(obj.key)
        return await pinned(obj)

    core.fs.cache.pinned = counted
    return asked


async def test_opens_of_files_fetched_ahead_find_their_pins_read_ahead(env):
    """rsync pays an open per file: the open of a file fetched ahead takes its key's pins
    from RAM (read in the background when it was asked for), not from a worker thread."""
    tree = put_tree(env, 40)
    async with env.core() as core:
        asked = count_pin_lookups(core)
        for key, data in tree.items():
            assert await copy(core, key, len(data)) == data
            await until(lambda: core.pins.looking_ahead == 0)
        assert asked == list(tree)[: WALK_AFTER + 1]  # only the opens before the walk


@pytest.mark.mock_clock
async def test_pins_read_ahead_stand_for_a_few_seconds_only(env):
    """An answer read ahead stands for the open only while fresh; a pin recorded since is
    seen by the next open after that, or by the key's next open."""
    tree = put_tree(env, WALK_AFTER + 3)
    keys = list(tree)
    async with env.core() as core:
        asked = count_pin_lookups(core)
        for key in keys[: WALK_AFTER + 1]:
            await copy(core, key, SMALL)
        await until(lambda: core.pins.looking_ahead == 0)
        asked.clear()
        await copy(core, keys[WALK_AFTER + 1], SMALL)  # fresh: from RAM
        await until(lambda: core.pins.looking_ahead == 0)
        assert asked == []
        await trio.sleep(AHEAD_FRESH + 1)
        assert await copy(core, keys[WALK_AFTER + 2], SMALL) == tree[keys[WALK_AFTER + 2]]
        assert asked == [keys[WALK_AFTER + 2]]  # stale: asked again


async def test_a_small_file_ahead_costs_one_cache_write_and_pins_are_read_in_batches(env):
    """Per small file fetched ahead, the cache is written once: its chunk, its proof and its
    ETag in one transaction (not bind, store, forget and record one after another); it needs
    no thread hop before its GET (looked up with its batch, filled in RAM); and the pins of
    the files ahead are read a batch of half the window at a time, not one per open."""
    tree = put_tree(env, 100)
    keys = list(tree)
    async with env.core() as core:
        store = core.fs.cache.cache
        calls = count_store_calls(store)
        for key in keys:
            assert await copy(core, key, SMALL) == tree[key]
        await settle(core)
        for key in keys[WALK_AFTER + 1 :]:  # fetched ahead: looked up with its batch, filled
            # in RAM (no partial file opened first), stored once
            assert [n for n, k in calls if k == key] == ["contains_each", "adopt+proof+bind"]
        batches = (len(keys) - WALK_AFTER - 1) // (AHEAD_FILES // 2) + 1
        assert calls.count(("pinned_each", "")) <= batches
        for key in keys:
            assert store.proof(core.fs._last_version[key].id) is not None


async def test_a_walker_that_catches_up_with_a_file_ahead_still_costs_one_cache_write(env):
    """On a slow link the walker often reaches a file whose GET is still on its way: it
    reads the bytes as they land, and the proof is still recorded with the chunk (not
    stored, then forgotten and recorded again once the last read has settled it)."""
    tree = put_tree(env, WALK_AFTER + 3)
    keys = list(tree)
    caught = keys[WALK_AFTER + 1]
    gate = env.store.hold(caught)
    got: list[bytes] = []
    async with env.core() as core:
        calls = count_store_calls(core.fs.cache.cache)
        for key in keys[: WALK_AFTER + 1]:
            await copy(core, key, SMALL)
        await gate_reached(gate)

        async def walker() -> None:
            got.append(await copy(core, caught, SMALL))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(walker)
            await until(lambda: any(k.obj.key == caught for k in core.reader._reading))
            gate.release()
        await settle(core)
        assert got == [tree[caught]]
        assert [n for n, k in calls if k == caught] == ["contains_each", "adopt+proof+bind"]
