"""What a reader sees when the object changes or the store misbehaves: ESTALE, retries,
EIO, and never a wrong byte."""

import errno

import pytest
import trio
import trio.testing

from rangefs.errors import (
    AccessDenied,
    NotFound,
    ObjectChanged,
    RemoteError,
    Transient,
)
from rangefs.fs import xattrs
from tests.core.fakes import etag_of
from tests.core.helpers import CHUNK, gate_reached, lookup_path, open_path, read_all, settle, until

# -- ETag pinning ------------------------------------------------------------------------------


async def test_an_open_file_keeps_its_version_after_the_object_changed(env):
    v1 = env.store.put("f", size=3 * CHUNK, seed=30)
    async with env.core(metadata_ttl=0) as core:
        fh = await open_path(core.fs, "f")
        assert bytes(await core.fs.read(fh, 0, 100)) == v1[:100]
        await settle(core)
        v2 = env.store.put("f", size=2 * CHUNK + 5, seed=31)
        # An uncached chunk: the GET carries the old ETag, the store answers 412 -> ESTALE.
        with pytest.raises(ObjectChanged) as exc:
            await core.fs.read(fh, 2 * CHUNK, 100)
        assert exc.value.errno == errno.ESTALE
        assert env.store.gets[-1].etag == etag_of(v1)
        assert core.stats.retries == {}  # a 412 is an answer, not worth a retry
        # A cached chunk of the old version is still served, with the old bytes.
        assert bytes(await core.fs.read(fh, 50, 100)) == v1[50:150]
        assert env.store.get_count("f") == 2
        assert len(v2) != len(v1)


async def test_a_reopen_sees_the_new_version_and_drops_the_old_chunks(env):
    v1 = env.store.put("f", size=3 * CHUNK, seed=32)
    async with env.core(metadata_ttl=0) as core:
        old = await open_path(core.fs, "f")
        assert await read_all(core.fs, old, len(v1)) == v1
        await settle(core)
        v2 = env.store.put("f", size=2 * CHUNK + 5, seed=33)
        new = await open_path(core.fs, "f")
        attr = await lookup_path(core.fs, "f")
        assert attr.size == len(v2)
        assert await read_all(core.fs, new, len(v2)) == v2
        ino = attr.ino
        assert await core.fs.getxattr(ino, xattrs.ETAG) == etag_of(v1).encode()  # old fh open
        # The old version's chunks are gone from memory and disk: the old handle cannot be
        # served a byte of either version.
        with pytest.raises(ObjectChanged):
            await core.fs.read(old, 0, 100)
        core.fs.release(old)
        await settle(core)
        assert await core.fs.getxattr(ino, xattrs.ETAG) == etag_of(v2).encode()
        assert await core.fs.getxattr(ino, xattrs.CHUNKS) == f"{CHUNK} ###".encode()


async def test_keep_cache_only_when_the_etag_is_unchanged(env):
    env.store.put("f", b"one")
    async with env.core(metadata_ttl=0) as core:
        ino = (await lookup_path(core.fs, "f")).ino
        _, keep = await core.fs.open(ino)
        assert not keep  # first open: nothing to keep
        _, keep = await core.fs.open(ino)
        assert keep
        env.store.put("f", b"two")
        fh, keep = await core.fs.open(ino)
        assert not keep
        assert await core.fs.read(fh, 0, 10) == b"two"


async def test_a_restart_after_a_change_drops_the_old_chunks_from_disk(env):
    v1 = env.store.put("f", size=2 * CHUNK, seed=34)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(v1)) == v1
        await settle(core)
    v2 = env.store.put("f", size=2 * CHUNK, seed=35)  # same size, other bytes
    gets = len(env.store.gets)
    async with env.core(metadata_ttl=0) as core:  # the indexed listing has expired
        fh = await open_path(core.fs, "f")
        assert await read_all(core.fs, fh, len(v2)) == v2
        assert len(env.store.gets) == gets + 2
        assert all(g.etag == etag_of(v2) for g in env.store.gets[gets:])


# -- retries and failures ----------------------------------------------------------------------


async def test_transient_failures_are_retried_and_the_read_succeeds(env):
    data = env.store.put("f", size=2 * CHUNK, seed=40)
    env.store.fail_transient("f", times=2, at=0, cause="http_503")
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert bytes(await core.fs.read(fh, 0, 1000)) == data[:1000]
        assert env.store.get_count("f", start=0) == 3
        assert core.stats.retries == {"http_503": 2}
        assert core.stats.errors == {}
        assert core.stats.read_errors == 0


async def test_persistent_failures_become_eio_and_are_counted(env):
    data = env.store.put("f", size=2 * CHUNK, seed=41)
    env.store.fail_transient("f", at=CHUNK, cause="http_500")
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(RemoteError) as exc:
            await core.fs.read(fh, CHUNK, 1000)
        assert exc.value.errno == errno.EIO
        assert not isinstance(exc.value, Transient)
        assert env.store.get_count("f", start=CHUNK) == 3  # the policy's attempts
        assert core.stats.retries == {"http_500": 2}
        assert core.stats.errors == {"http_500": 1}
        assert core.stats.read_errors == 1
        # Other chunks still read; the failure is not remembered once the store recovers.
        assert bytes(await core.fs.read(fh, 0, 10)) == data[:10]
        env.store.clear_faults()
        assert bytes(await core.fs.read(fh, CHUNK, 1000)) == data[CHUNK : CHUNK + 1000]


async def test_waiters_of_a_failed_fetch_all_get_the_error_from_one_series_of_attempts(env):
    env.store.put("f", size=CHUNK, seed=42)
    gate = env.store.hold("f")
    env.store.fail_transient("f", cause="timeout")
    async with env.core() as core:
        handles = [await open_path(core.fs, "f") for _ in range(5)]
        errors = []

        async def reader(fh):
            try:
                await core.fs.read(fh, 0, 100)
            except RemoteError as exc:
                errors.append(exc.errno)

        async with trio.open_nursery() as nursery:
            for fh in handles:
                nursery.start_soon(reader, fh)
            await gate_reached(gate)
            # All five wait on the one fetch (a reader still opening in a thread would not).
            await until(lambda: sum(f.users for f in core.reader._fills.values()) == 5)
            gate.release()
        assert errors == [errno.EIO] * 5
        assert env.store.get_count("f") == 3


async def test_a_body_cut_half_way_is_retried(env):
    data = env.store.put("f", size=2 * CHUNK, seed=43)
    env.store.cut_body("f", times=1, at=0)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert bytes(await core.fs.read(fh, 0, 1000)) == data[:1000]
        assert core.stats.retries == {"cut": 1}
        assert env.store.bytes_sent == CHUNK // 2 + CHUNK


async def test_a_short_body_fails_the_read_and_is_never_served_or_cached(env):
    data = env.store.put("f", size=2 * CHUNK, seed=44)
    env.store.short_body("f", at=0)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(RemoteError) as exc:
            await core.fs.read(fh, 0, 1000)
        assert exc.value.errno == errno.EIO
        await settle(core)
        ino = (await lookup_path(core.fs, "f")).ino
        assert await core.fs.getxattr(ino, xattrs.CACHED) == f"0 {len(data)}".encode()
        assert core.stats.bytes_fetched == 0
        env.store.clear_faults()
        assert bytes(await core.fs.read(fh, 0, 1000)) == data[:1000]


async def test_errors_that_are_answers_are_not_retried(env):
    env.store.put("f", size=CHUNK, seed=45)
    env.store.fail("f", lambda: AccessDenied("GET: AccessDenied"))
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(AccessDenied) as exc:
            await core.fs.read(fh, 0, 10)
        assert exc.value.errno == errno.EACCES
        assert env.store.get_count("f") == 1
        assert core.stats.retries == {}


async def test_an_object_deleted_while_open_is_enoent_for_uncached_chunks(env):
    data = env.store.put("f", size=2 * CHUNK, seed=46)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        assert bytes(await core.fs.read(fh, 0, 10)) == data[:10]
        env.store.delete("f")
        with pytest.raises(NotFound):
            await core.fs.read(fh, CHUNK + 5, 10)
        assert bytes(await core.fs.read(fh, 10, 10)) == data[10:20]


async def test_a_bug_in_the_store_becomes_eio_not_a_crash(env):
    data = env.store.put("f", size=CHUNK, seed=47)
    env.store.fail("f", lambda: ValueError("a bug"), times=1)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        with pytest.raises(RemoteError) as exc:
            await core.fs.read(fh, 0, 10)
        assert exc.value.errno == errno.EIO
        assert bytes(await core.fs.read(fh, 0, 10)) == data[:10]  # the core still works


async def test_a_listing_that_keeps_failing_is_eio_and_a_transient_one_is_retried(env):
    env.store.put("d/f", b"x")
    env.store.fail_list("d/", lambda: Transient("injected", "http_503"), times=2)
    async with env.core() as core:
        assert (await lookup_path(core.fs, "d/f")).size == 1
        assert core.stats.retries == {"http_503": 2}
    env.store.fail_list("", lambda: Transient("injected", "connection"))
    async with env.core(metadata_ttl=0) as core:  # not answered from the index
        with pytest.raises(RemoteError) as exc:
            await lookup_path(core.fs, "d")
        assert exc.value.errno == errno.EIO
        assert core.stats.errors == {"connection": 1}
