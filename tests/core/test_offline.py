"""Offline: the state machine of :mod:`rangefs.remote.reachability` on a MockClock, and what a mount
serves over a store that cannot be reached (the fake's ``unplug``): cached bytes and the last
listings, EIO at once for the rest, ENOENT for unknown names; back online by itself."""

import errno
import logging

import pytest
import trio
import trio.testing

from rangefs.errors import NotFound, RemoteError, Unreachable
from rangefs.fs import xattrs
from rangefs.fs.inodes import ROOT_INODE
from rangefs.remote.reachability import PROBE_FIRST, PROBE_MAX, Reachability
from rangefs.stats import Stats
from tests.core.helpers import CHUNK, lookup_path, open_path, read_all, settle
from tests.support.readdir import read_dir

# -- the state machine ---------------------------------------------------------------------


class Probe:
    """A probe that gets no answer until ``answer`` is set; records when it was called."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.answer: BaseException | bool | None = False  # False: no answer

    async def __call__(self) -> bool:
        self.times.append(trio.current_time())
        if self.answer is False:
            raise Unreachable("probe: connection refused")
        if isinstance(self.answer, BaseException):
            raise self.answer
        return True


async def fail_unreachable(state: Reachability) -> None:
    with pytest.raises(Unreachable), state.guard("GET s3://b/k"):
        raise Unreachable("GET s3://b/k: connection refused")


@pytest.mark.mock_clock
async def test_goes_offline_fails_fast_and_probes_with_backoff_until_s3_answers(caplog):
    caplog.set_level(logging.INFO, logger="rangefs.remote.reachability")
    stats = Stats()
    state = Reachability(stats, "S3 at http://s3")
    probe = Probe()
    async with trio.open_nursery() as nursery:
        await nursery.start(state.run, probe)
        await trio.sleep(60)
        assert probe.times == [], "no probe while online"
        await fail_unreachable(state)
        went = trio.current_time()
        assert not state.online and stats.online == 0 and stats.went_offline == 1
        with pytest.raises(Unreachable) as exc, state.guard("GET s3://b/other"):
            raise AssertionError("a call while offline must not be made")
        assert exc.value.errno == errno.EIO and "offline" in str(exc.value)
        assert stats.offline_refused == 1
        await trio.sleep(30)
        waits = [round(t - went, 3) for t in probe.times]
        delays = [PROBE_FIRST * 2**i for i in range(4)] + [PROBE_MAX] * 2
        assert waits[:6] == [sum(delays[: i + 1]) for i in range(6)], waits
        probe.answer = True
        asked = len(probe.times)
        await trio.sleep(PROBE_MAX + 0.1)
        assert state.online and stats.online == 1
        assert len(probe.times) == asked + 1
        await trio.sleep(60)
        assert len(probe.times) == asked + 1, "no probe once online again"
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("offline: S3 at http://s3 cannot be reached (GET s3://b/k")
    assert lines[1].startswith("online: S3 at http://s3 answers again after ")


@pytest.mark.mock_clock
async def test_any_answer_is_s3_being_there():
    state = Reachability()
    with pytest.raises(NotFound), state.guard():  # running when the mount went offline
        await fail_unreachable(state)
        assert not state.online
        raise NotFound("head s3://b/k: 404")
    assert state.online
    for answer in (NotFound("404"), RemoteError("503 SlowDown after retries")):
        with pytest.raises(type(answer)), state.guard():
            raise answer
        assert state.online
    # A probe answered with 403: online, and the reads will say EACCES themselves.
    state = Reachability(online=False)
    probe = Probe()
    probe.answer = RemoteError("403 AccessDenied")
    async with trio.open_nursery() as nursery:
        await nursery.start(state.run, probe)
        await trio.sleep(PROBE_FIRST + 0.1)
        assert state.online
        nursery.cancel_scope.cancel()


@pytest.mark.mock_clock
async def test_a_call_older_than_the_last_answer_does_not_take_the_mount_offline_again():
    state = Reachability()
    async with trio.open_nursery() as nursery:
        slow = trio.Event()

        async def slow_call() -> None:
            with pytest.raises(Unreachable), state.guard("GET s3://b/slow"):
                await slow.wait()  # started while online, fails after the probe answered
                raise Unreachable("GET s3://b/slow: read timeout")

        nursery.start_soon(slow_call)
        await trio.sleep(1)
        await fail_unreachable(state)
        await trio.sleep(1)
        state.answered()  # the probe
        slow.set()
        await trio.testing.wait_all_tasks_blocked()
    assert state.online


# -- a core over a store that cannot be reached ------------------------------------------------


def requests(store) -> int:
    """Attempts the store received, probes (``check_access``) left out."""
    return sum(n for method, n in store.calls.items() if method != "check_access")


async def wait_online(core, deadline: float = 10.0) -> None:
    with trio.fail_after(deadline):
        while not core.reachability.online:  # noqa: ASYNC110 - polled with a deadline
            await trio.sleep(0.01)


async def listing_of(fs, path: str) -> list[tuple[str, int, int]]:
    ino = (await lookup_path(fs, path)).ino if path else ROOT_INODE
    fh = await fs.opendir(ino)
    out: list[tuple[str, int, int]] = []
    try:
        while page := list(await read_dir(fs, fh, len(out))):
            out += [(e.name, e.size, e.mtime_ns) for e in page]
        return out
    finally:
        await fs.releasedir(fh)


async def test_offline_serves_cached_bytes_and_listings_and_fails_the_rest_fast(env):
    cached = env.store.put("dir/cached.bin", size=3 * CHUNK + 7, seed=1)
    env.store.put("dir/uncached.bin", size=2 * CHUNK, seed=2)
    env.store.put("unlisted/x.bin", size=10, seed=3)
    async with env.core(metadata_ttl=0) as core:
        fs = core.fs
        fh = await open_path(fs, "dir/cached.bin")
        assert await read_all(fs, fh, len(cached)) == cached
        fs.release(fh)
        await settle(core)
        before = {path: await listing_of(fs, path) for path in ("", "dir")}
        assert await fs.getxattr(ROOT_INODE, xattrs.ONLINE) == b"online"

        env.store.unplug()
        # The first listing after the TTL gets no answer: offline; the last listing is served.
        assert await listing_of(fs, "dir") == before["dir"]
        assert not core.reachability.online and core.stats.went_offline == 1
        assert await fs.getxattr(ROOT_INODE, xattrs.ONLINE) == b"offline"
        calls = requests(env.store)

        with trio.fail_after(5):  # nothing waits for a timeout or a retry from now on
            assert await listing_of(fs, "") == before[""]
            assert await listing_of(fs, "dir") == before["dir"]
            attr = await lookup_path(fs, "dir/cached.bin")
            assert attr.size == len(cached)
            # Opening needs no request: the last listing's ETag names the cached chunks.
            fh = await open_path(fs, "dir/cached.bin")
            assert await read_all(fs, fh, len(cached)) == cached
            assert bytes(await fs.read(fh, CHUNK - 3, 10)) == cached[CHUNK - 3 : CHUNK + 7]
            fh = await open_path(fs, "dir/uncached.bin")
            with pytest.raises(Unreachable) as exc:
                await fs.read(fh, 0, 100)
            assert exc.value.errno == errno.EIO
            with pytest.raises(NotFound):
                await lookup_path(fs, "dir/no-such-name")
            # A directory never listed: nothing is known about it.
            with pytest.raises(Unreachable):
                await listing_of(fs, "unlisted")
        assert requests(env.store) == calls, "nothing but probes reached the store"
        assert core.stats.offline_refused >= 3

        env.store.plug()
        await wait_online(core, PROBE_FIRST + 5)
        assert await fs.getxattr(ROOT_INODE, xattrs.ONLINE) == b"online"
        fh = await open_path(fs, "dir/uncached.bin")
        assert len(await read_all(fs, fh, 2 * CHUNK)) == 2 * CHUNK
        assert [name for name, *_ in await listing_of(fs, "unlisted")] == [".", "..", "x.bin"]
        assert core.stats.went_offline == 1


async def test_an_uncached_read_is_what_takes_the_mount_offline(env):
    env.store.put("f", size=2 * CHUNK, seed=4)
    async with env.core() as core:
        fh = await open_path(core.fs, "f")
        env.store.unplug()
        with pytest.raises(Unreachable):
            await core.fs.read(fh, 0, 10)
        assert env.store.calls["get_range"] == 3, "the store's retries came first"
        assert not core.reachability.online
        with pytest.raises(Unreachable):
            await core.fs.read(fh, CHUNK, 10)
        assert env.store.calls["get_range"] == 3, "offline: refused without a request"
        env.store.plug()
        await wait_online(core)
        assert len(await core.fs.read(fh, CHUNK, 10)) == 10


async def test_answers_from_s3_never_take_the_mount_offline(env):
    env.store.put("f", size=CHUNK, seed=5)
    env.store.put("gone", b"x")
    async with env.core(metadata_ttl=0) as core:
        fh = await open_path(core.fs, "f")
        env.store.fail_transient("f")  # 503s after the retries: EIO, S3 is there
        with pytest.raises(RemoteError) as exc:
            await core.fs.read(fh, 0, 10)
        assert not isinstance(exc.value, Unreachable)
        await lookup_path(core.fs, "gone")
        env.store.delete("gone")  # a 404 is the truth, also when a listing is cached
        with pytest.raises(NotFound):
            await lookup_path(core.fs, "gone")
        assert core.reachability.online and core.stats.went_offline == 0


async def test_a_core_started_offline_serves_the_index_and_cache_of_an_earlier_mount(env):
    cached = env.store.put("dir/a.bin", size=2 * CHUNK + 1, seed=6)
    env.store.put("dir/b.bin", size=CHUNK, seed=7)
    async with env.core() as core:
        fh = await open_path(core.fs, "dir/a.bin")
        assert await read_all(core.fs, fh, len(cached)) == cached
        await settle(core)
        before = {path: await listing_of(core.fs, path) for path in ("", "dir")}
    env.store.unplug()
    async with env.core(online=False) as core:  # a remount while S3 cannot be reached
        assert await core.fs.getxattr(ROOT_INODE, xattrs.ONLINE) == b"offline"
        with trio.fail_after(5):
            for path, entries in before.items():  # the root's mtime is the mount's time
                assert (await listing_of(core.fs, path))[2:] == entries[2:]
            fh = await open_path(core.fs, "dir/a.bin")
            assert await read_all(core.fs, fh, len(cached)) == cached
            fh = await open_path(core.fs, "dir/b.bin")
            with pytest.raises(Unreachable):
                await core.fs.read(fh, 0, 10)
        env.store.plug()
        await wait_online(core)
        assert len(await core.fs.read(fh, 0, 10)) == 10
        assert core.stats.went_offline == 0  # it never went: it started so


async def test_a_proof_that_cannot_be_confirmed_offline_keeps_the_cached_chunks(env):
    """An SSE-KMS object's ETag looks like an MD5 but is not one: only a HEAD can tell. A
    remount offline cannot ask, so the last read of the file fails, and nothing is dropped."""
    size = 2 * CHUNK + 3
    data = env.store.put("kms.bin", size=size, seed=8, etag='"' + "0" * 32 + '"',
                         encryption="aws:kms")  # fmt: skip
    async with env.core() as core:
        fh = await open_path(core.fs, "kms.bin")
        assert await read_all(core.fs, fh, size) == data  # HEAD part 1 said: not a proof
        await settle(core)
    env.store.unplug()
    async with env.core(online=False) as core:
        ino = (await lookup_path(core.fs, "kms.bin")).ino
        fh, _ = await core.fs.open(ino)
        assert bytes(await core.fs.read(fh, 0, CHUNK)) == data[:CHUNK]
        with pytest.raises(Unreachable):
            await core.fs.read(fh, CHUNK, size)  # the last bytes wait for a proof
        assert await core.fs.getxattr(ino, xattrs.CHUNKS) == f"{CHUNK} ###".encode()
        env.store.plug()
        await wait_online(core)
        assert bytes(await core.fs.read(fh, CHUNK, size)) == data[CHUNK:]
        assert env.store.get_count("kms.bin") == 3, "nothing fetched again"
