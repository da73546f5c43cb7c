"""The core tier: :class:`~rangefs.fs.filesystem.Filesystem` and the pyfuse3 adapter driven
directly, over the in-memory store (:mod:`tests.core.fakes`) and a real chunk cache in
``tmp_path``. No kernel, no server, no sleeps for timing.

``async def`` tests run under ``trio.run`` (a ten-line stand-in for pytest-trio, which is
not a dependency) inside a deadline, so a hang fails one test quickly. A test marked
``@pytest.mark.mock_clock`` runs on ``trio.testing.MockClock(autojump_threshold=0)`` instead
(and without the deadline, which the clock would jump to).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from rangefs import options
from rangefs.cache.chunk_cache import ChunkCache
from rangefs.cache.metadata_index import MetadataIndex
from rangefs.config import Config
from rangefs.daemon.core import Core, build_core
from rangefs.options import MOUNT
from rangefs.remote.store import ObjectStore
from rangefs.remote.versions import VersionedStore
from rangefs.stats import Stats
from tests.core.fakes import FakeStore
from tests.core.helpers import CHUNK

TEST_DEADLINE = 20.0  # seconds; pytest's own timeout is a backstop


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mock_clock: run the trio test on a MockClock")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in inspect.signature(fn).parameters}
    if pyfuncitem.get_closest_marker("mock_clock"):
        clock = trio.testing.MockClock(autojump_threshold=0)
        trio.run(functools.partial(fn, **kwargs), clock=clock)
        return True

    async def bounded() -> None:
        with trio.fail_after(TEST_DEADLINE):
            await fn(**kwargs)

    trio.run(bounded)
    return True


class Env:
    """One bucket (``store``), one cache directory, and cores built over them on demand."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.store = FakeStore("bucket")
        self.cache_dir = tmp_path / "cache"

    def config(self, **overrides: Any) -> Config:
        """The mount defaults of the option table, with small chunks and these overrides."""
        base = options.make_config("bucket", self.tmp_path / "mnt", options.defaults(MOUNT))
        settings: dict[str, Any] = {
            "cache_dir": self.cache_dir,
            "cache_size": 1024 * CHUNK,
            "chunk_size": CHUNK,
            "memory_limit": 16 * CHUNK,
            "max_readahead": 8 * CHUNK,
            "parallel": 4,
            "metadata_ttl": 60.0,
        }
        settings.update(overrides)
        return dataclasses.replace(base, **settings)

    @contextlib.asynccontextmanager
    async def core(self, online: bool = True, **overrides: object) -> AsyncIterator[Core]:
        """A started core (fresh stats, fresh cache object over the same directory); on exit
        its tasks are cancelled and the cache is closed, with every chunk write finished.
        With ``version_at``, the store is seen as of that time (as a ``--version-at`` mount);
        ``online=False`` starts it offline (as ``--allow-offline`` when S3 cannot be reached)."""
        config = self.config(**overrides)
        stats = Stats()
        self.store.use_stats(stats)
        cache = ChunkCache(config.cache_dir, config.cache_size, stats)
        index = MetadataIndex(config.cache_dir)
        try:
            store: ObjectStore = self.store
            if config.version_at is not None:  # as the daemon does for --version-at
                store = VersionedStore(self.store, config.version_at)
            core = build_core(config, store, cache, index, stats, online=online)
            async with trio.open_nursery() as nursery:
                await nursery.start(core.run)
                yield core
                nursery.cancel_scope.cancel()
        finally:
            index.close()
            cache.close()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)
